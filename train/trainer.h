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
#pragma once

#include <functional>
#include <string>

#include "train/config.h"
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
};

struct TrainHooks {
  std::function<void(const std::string&)> log;  // human-readable lines (default: stdout)
  bool progress_bar = false;                    // redraw one line on a terminal
  int64_t stop_after_epochs = 0;                // stop early after this many epochs (tests)
};

// Trains from scratch (or from stage.init / model.pretrained) into
// <run.out_dir>/<run.name>. An existing run folder with a checkpoint is an
// error: resume it instead.
TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks = {});

struct EvalResult {
  EpochRecord record;          // val_loss, mean_auc, per-label AUC
  std::vector<RocCurve> roc;   // per label
  int64_t studies = 0;
};

// Scores `weights` (a checkpoint or timm-format safetensors) on the
// validation fold the config describes (`fold` >= 0 overrides data.fold),
// with the stage's input (annotated images for a teacher, plain otherwise).
EvalResult evaluate(const TrainConfig& cfg, const std::string& weights, int64_t fold = -1);

// Continues the run in `run_dir` from its last.ckpt with its saved config.
TrainResult resume(const std::string& run_dir, const TrainHooks& hooks = {});

}  // namespace rz
