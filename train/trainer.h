// The training loop behind `ranzcr train`: one stage (teacher, student-kd,
// student-transfer, finetune) of one fold, from a TrainConfig, into a run
// folder:
//   <out_dir>/<name>/config.toml      the resolved configuration
//                    metrics.jsonl    one JSON object per logged step and per epoch
//                    summary.csv      one row per epoch
//                    last.ckpt        after every epoch (resume point)
//                    best.ckpt        best validation mean AUC so far
//                    best.safetensors the best weights in timm's layout
//                    report.html      AUC table, ROC curves, loss/AUC curves
//
// The folder is consistent under a kill at any instant. Every file is
// written atomically (engine/atomic_file.h), and an epoch ends in this order:
// its metrics.jsonl and summary.csv lines, last.ckpt (the commit point), then
// best.ckpt and best.safetensors when the epoch is the best, then the report.
// A resume keeps exactly what last.ckpt committed: log lines of later epochs
// (an interrupted one) are dropped and that epoch runs again; best.* lagging
// behind a last.ckpt whose epoch is the best are rewritten from it; a stale
// temporary of an interrupted write is removed. Each step of the sequence
// passes a fault point (engine/fault.h: "epoch files <next file>", and
// "train step" after every optimizer step) for the kill tests.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/seresnet.h"
#include "train/compute.h"
#include "train/config.h"
#include "train/progress.h"
#include "train/report.h"

namespace rz {

struct TrainResult {
  std::string run_dir;
  int64_t epochs_run = 0;     // epochs trained by this call
  int64_t best_epoch = -1;
  double best_mean_auc = 0;
  EpochRecord last;
  std::vector<EpochRecord> history;
  std::vector<RocCurve> best_roc;  // per label, at the best epoch of this call
  int rank = 0;                    // this process's rank in data-parallel training (0 alone reports)
};

struct TrainHooks {
  std::function<void(const std::string&)> log;  // human-readable lines (default: stdout)
  // Per-epoch progress on stderr (train/progress.h): live on a terminal, plain
  // lines every train.log_every steps or progress_every_s seconds, or off
  // (then hooks.log gets a line every train.log_every steps).
  ProgressMode progress = ProgressMode::off;
  double progress_every_s = 30.0;
  int64_t stop_after_epochs = 0;                // stop early after this many epochs (tests)
  // resume(): accept a config.toml that differs from the configuration stored
  // in last.ckpt in keys that change what the run computes (model, data,
  // optimizer, schedule, ...); the new values apply from the next epoch.
  // Without it such a resume is refused, listing every differing key. Keys
  // that are safe to change (resume_safe_config_keys(), train/run_folder.h)
  // never need it.
  bool allow_config_change = false;
};

// Trains from scratch (or from stage.init / model.pretrained) into
// <run.out_dir>/<run.name>. An existing run folder with a checkpoint is an
// error: resume it instead.
TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks = {});

// The architecture a config trains (model.*, 11 classes).
ResNetConfig model_config(const TrainConfig& cfg);
// The run's model as training, eval and predict build it (model.*, 11
// classes, initialized from `seed`).
std::shared_ptr<ResNet> build_model(const TrainConfig& cfg, uint64_t seed);
// run.deterministic, run.allow_tf32, run.conv_impl, run.allow_unvalidated_kernels.
CudaSettings cuda_settings(const TrainConfig& cfg);

struct EvalResult {
  EpochRecord record;          // val_loss, mean_auc, per-label AUC
  std::vector<RocCurve> roc;   // per label
  int64_t studies = 0;
  std::vector<std::string> uids;  // the validation studies, in evaluation order
  std::vector<float> probs;       // [study * 11 + label]: sigmoid of the logits
};

// Scores `weights` (a checkpoint or timm-format safetensors) on the
// validation fold the config describes (`fold` >= 0 overrides data.fold),
// with the stage's input (annotated images for a teacher, plain otherwise).
EvalResult evaluate(const TrainConfig& cfg, const std::string& weights, int64_t fold = -1);

// Continues the run in `run_dir` from its last.ckpt with its config.toml.
// Before anything else it checks, with errors naming the file, key and
// values: config.toml against the configuration stored in last.ckpt (see
// TrainHooks::allow_config_change), last.ckpt's state against train.epochs,
// and that best.ckpt holds the best epoch last.ckpt records.
TrainResult resume(const std::string& run_dir, const TrainHooks& hooks = {});

}  // namespace rz
