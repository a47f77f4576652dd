// Inference and scoring: `ranzcr predict` writes a sample_submission-format
// CSV for a folder of images; `ranzcr score` computes the per-label and mean
// AUC of any such CSV against labels in train.csv format.
#pragma once

#include <string>

#include "train/metrics.h"

namespace rz {

struct PredictOptions {
  std::string weights;            // checkpoint or timm-format safetensors
  std::string model = "seresnet152d";
  int64_t img_size = 512;
  int64_t in_chans = 3;
  std::string images_dir;         // <uid>.jpg / .png files
  std::string sample_submission;  // optional: the UIDs and their order
  std::string out;                // submission CSV to write
  bool tta_hflip = false;         // average with the horizontally flipped image
  bool clahe = true;              // as `ranzcr prep` did for training
  int64_t batch = 16;
  std::string device = "auto";    // cpu, cuda, cuda:N, auto
  std::string precision = "fp32"; // fp32 or bf16 (CUDA)
};

struct PredictReport {
  int64_t images = 0;
  double seconds = 0;
};

// Decode -> CLAHE -> resize_area to img_size (the prep pipeline) -> model ->
// sigmoid, per image; a missing or corrupt image is an error naming it.
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
