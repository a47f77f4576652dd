// Inference and scoring: `ranzcr predict` writes a sample_submission-format
// CSV for a folder of images; `ranzcr score` computes the per-label and mean
// AUC of any such CSV against labels in train.csv format.
//
// predict reads each model's inputs exactly as its run validated them: the
// run's checkpoint carries its resolved config (model, input size, channels,
// prep.* and aug.eval_crop), and every image goes through the one sample
// pipeline (data/pipeline.h): decode -> CLAHE -> area resize to the prep size
// -> the eval transform -> normalization. `predict` on a run's validation
// images therefore reproduces `ranzcr eval`'s per-label AUCs.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "train/progress.h"

#include "train/metrics.h"

namespace rz {

struct PredictOptions {
  // Models: run folders (an ensemble when several), each read from its
  // checkpoint `ckpt` (best, last, or a file path when there is one run) ...
  std::vector<std::string> runs;
  std::string ckpt = "best";
  // ... or one plain weights file (timm-format safetensors or a ranzcr
  // checkpoint) described by the explicit options below.
  std::string weights;
  // Only with `weights`: a run says these itself, and overriding them would
  // feed its model inputs it was never validated on.
  std::optional<std::string> model;     // default seresnet152d
  std::optional<int64_t> img_size;      // default 512
  std::optional<int64_t> in_chans;      // default 3
  std::optional<int64_t> prep_size;     // default img_size
  std::optional<bool> clahe;            // default true
  std::optional<double> clahe_clip;     // default 2.0
  std::optional<int64_t> clahe_tiles;   // default 8 (both directions)
  std::optional<double> eval_crop;      // default 1.0

  std::string images_dir;         // <uid>.jpg / .jpeg / .png files
  std::string sample_submission;  // optional: the UIDs and their order
  std::string out;                // submission CSV to write
  bool tta_hflip = false;         // also read every image flipped horizontally
  std::string ensemble = "prob";  // prob: mean of probabilities over models and views; logit: sigmoid of the mean logit
  // Safe to choose: they change speed, not what a model reads (bf16 changes
  // rounding, and says so).
  int64_t batch = 0;              // 0: the first run's train.batch (16 with `weights`)
  int64_t workers = 0;            // decode threads; 0: every core
  std::string device = "auto";    // cpu, cuda, cuda:N, auto
  std::string precision;          // fp32 or bf16; empty: a run's own on CUDA, fp32 on the CPU
  std::function<void(const std::string&)> log;  // notes (and progress when `progress` is off); empty: stderr
  // Per input pass on stderr (train/progress.h); off: a log line every 10 s.
  ProgressMode progress = ProgressMode::off;
};

struct PredictReport {
  int64_t images = 0;
  int64_t models = 0;
  int64_t views = 1;      // 2 with the flip
  double seconds = 0;     // wall time, loading the models included
  double images_per_second = 0;  // over the image passes only
};

// Decode -> CLAHE -> area resize -> eval transform -> model -> sigmoid,
// batched, decoding on worker threads ahead of the model, on the GPU when
// there is one. A missing or corrupt image, a non-finite output, an unsafe
// override or a run without recorded preprocessing is an error naming it;
// nothing is written then.
PredictReport run_predict(const PredictOptions& opt);

// `pred`: StudyInstanceUID plus the 11 label columns (any order, extra
// columns ignored); `truth`: train.csv format. Every prediction UID must be in
// the truth file and every truth UID in the predictions; missing columns,
// unknown UIDs and unparseable or non-finite probabilities are errors naming
// the file, line and value.
AucReport score_submission(const std::string& pred, const std::string& truth);

// The per-label table, one label per line, then the mean.
std::string format_auc_table(const AucReport& r);

}  // namespace rz
