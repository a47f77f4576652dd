// Measured against the bound: the GPU benches' raw outputs joined with the
// roofline model, as "% of roofline" per kernel class.
//
// Reads what the benches write (bench/results/*/steps.tar.gz holds them):
//  - train_step_bench JSON: one whole training step; its bound is the
//    roofline of the same model, size, batch, precision, optimizer and fused
//    options (train_step_bench --fused-se turns on every fused block op);
//  - ops_gpu_bench's table (or its --json lines): each row's compulsory
//    bytes and median time; its bound is bytes / bandwidth;
//  - conv_bench's table: each seresnet152d conv shape and pass timed for
//    cuDNN and the native variants; its bound is conv_pass() of that shape,
//    and each class sums the shapes weighted by their layer counts.
// % of roofline = lower-bound time / measured time (100% = at the bound).
#pragma once

#include <string>
#include <vector>

#include "train/roofline.h"

namespace rz {

struct JoinRow {
  std::string source;   // the file's name
  std::string klass;    // "step bf16 cudnn", "conv fwd v2", "relu_fwd bf16", ...
  int64_t rows = 0;     // measurements summed into this class
  double measured_s = 0;
  double bound_s = 0;
  double percent() const { return measured_s > 0 ? 100.0 * bound_s / measured_s : 0.0; }
};

struct JoinResult {
  GpuPeaks gpu;
  std::string device;   // as the bench named it
  std::vector<JoinRow> rows;
};

// `gpu_key` empty: the GPU is the one the files name (H200 -> h200,
// H100 -> h100-sxm, A100 -> a100); files naming different GPUs, or none
// known, are an error. Unreadable or unrecognized files are errors naming
// the file and line.
JoinResult roofline_join(const std::vector<std::string>& files, const std::string& gpu_key = "");
std::string join_table(const JoinResult& r);

}  // namespace rz
