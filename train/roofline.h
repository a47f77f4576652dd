// `ranzcr info --roofline`: what one training step of a ResNet / SE-ResNet
// must cost on a GPU, op by op, before anything runs.
//
// The step is listed as the engine runs it on CUDA (models/seresnet.cpp's
// forward, the autograd backward, the optimizer), with the model's fused
// options honoured: each entry is one op front-end call (conv2d forward, its
// data and weight gradients, batch_norm2d or the fused batch_norm_act and
// se_block_tail, relu, add, pools, the SE's linear layers, cast for bf16
// weights, the gradient sums autograd makes where a tensor feeds two ops,
// AccumulateGrad, the fused BCE loss, the optimizer and EMA updates).
//
// For each op: FLOPs (a multiply-add is 2), compulsory bytes (every input
// read once and every output written once, at the dtype the engine stores:
// bf16 activations and weight copies in mixed precision, fp32 parameters,
// gradients and optimizer state), arithmetic intensity, and the lower-bound
// time on a GPU's published peaks: max(FLOPs / peak, bytes / bandwidth),
// where convolutions and linear layers run at the tensor-core rate of the
// precision and everything else at the CUDA-core fp32 rate. The step's
// bound is the sum over ops (the engine runs them one after another on one
// stream); a kernel that makes several passes over memory moves more than its
// compulsory bytes, which is exactly the gap a measurement then shows.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "models/seresnet.h"
#include "train/config.h"

namespace rz {

// A GPU's published peaks (bench/gpus/<name>.toml, or any file in that form).
struct GpuPeaks {
  std::string key;                 // "h100-sxm", or the file's path
  std::string name;                // "NVIDIA H100 SXM5 80GB"
  double bf16_dense_tflops = 0;    // tensor cores, without sparsity
  double tf32_dense_tflops = 0;
  double fp32_tflops = 0;          // CUDA cores
  double hbm_tbps = 0;             // device memory bandwidth, TB/s (1e12 bytes)
  double memory_gib = 0;
  std::string source;              // where the numbers come from
};

// The built-in GPUs (bench/gpus/*.toml, compiled in), by key.
std::vector<std::string> builtin_gpus();
// A built-in key or a path to a TOML file with the same fields. Errors name
// the file, the field and the value.
GpuPeaks gpu_peaks(const std::string& key_or_file);
GpuPeaks parse_gpu_peaks(const std::string& toml_text, const std::string& origin);

struct RooflineOptions {
  ResNetConfig model;              // architecture, in_chans, classes, fused_* flags
  int64_t image_size = 512;
  int64_t batch = 32;
  bool bf16 = true;                // mixed precision (else fp32 everywhere)
  bool allow_tf32 = false;         // fp32 convs/GEMMs on TF32 tensor cores
  std::string optimizer = "adamw"; // adamw | adam | sgd (with momentum)
  bool ema = false;                // an EMA of the weights updated every step
  bool clip_grad = false;          // gradient-norm clipping (a norm pass and a scale pass)
};

struct RooflineOp {
  std::string layer;  // "layer3.12.conv2", "layer3.12.se.fc1", "fc", "optimizer"
  std::string kind;   // "conv.fwd", "conv.dgrad", "conv.wgrad", "bn.fwd", ... (kernel class)
  std::string phase;  // "forward", "backward" or "optimizer"
  double flops = 0;
  double bytes = 0;
  bool tensor_core = false;  // bounded by the tensor-core rate (convs, linear layers)
  // The part of `flops` that is convolution or linear-layer products (all of
  // a conv's; the SE's two small products inside se_block_tail): what MFU counts.
  double model_flops = 0;
};

struct RooflineTotals {
  double flops = 0, bytes = 0;
  double model_flops = 0;     // convolution and linear FLOPs of the step (fwd, dgrad, wgrad), fused or not
  double bound_s = 0;         // sum over ops of each op's lower bound
  double memory_bound_s = 0;  // the part of bound_s spent in memory-bound ops
  double images_per_s = 0;    // batch / bound_s: an upper bound
  double mfu_ceiling = 0;     // model_flops / (bound_s * the precision's tensor peak)
};

// The FLOP/s that bound an op on `gpu`: its tensor-core rate for the
// precision (bf16, TF32 when allowed, else CUDA-core fp32) for convolutions
// and linear layers, the CUDA-core fp32 rate for everything else.
double peak_flops(const RooflineOp& op, const GpuPeaks& gpu, bool bf16, bool allow_tf32);
// max(FLOPs / peak, bytes / bandwidth): the least time the op can take.
double bound_time(const RooflineOp& op, const GpuPeaks& gpu, bool bf16, bool allow_tf32);

struct Roofline {
  RooflineOptions options;
  GpuPeaks gpu;
  std::vector<RooflineOp> ops;
  RooflineTotals totals;

  double peak_flops(const RooflineOp& op) const;     // FLOP/s bounding this op
  double compute_time(const RooflineOp& op) const;   // flops / peak
  double memory_time(const RooflineOp& op) const;    // bytes / bandwidth
  double bound_time(const RooflineOp& op) const;     // the larger of the two
  bool memory_bound(const RooflineOp& op) const;
};

// One convolution pass as the engine runs it: "fwd" (x, w -> y), "dgrad"
// (dy, w -> dx) or "wgrad" (x, dy -> dw), NHWC activations and the weight
// at 2 bytes (bf16) or 4. `h` and `w` are the input's; padding is k / 2.
struct ConvShape {
  int64_t n = 1, h = 1, w = 1, c = 1, k = 1, r = 1, stride = 1;
  int64_t out_h() const { return (h + 2 * (r / 2) - r) / stride + 1; }
  int64_t out_w() const { return (w + 2 * (r / 2) - r) / stride + 1; }
};
RooflineOp conv_pass(const ConvShape& shape, const std::string& pass, bool bf16);

// What a training config runs: model.* (fused options included),
// model.img_size, train.batch, run.precision and run.allow_tf32, optim.name,
// train.ema_decay and train.clip_grad.
RooflineOptions roofline_options(const TrainConfig& cfg);

// The ops of one training step, in execution order (forward, backward in
// reverse, optimizer). Independent of any GPU.
std::vector<RooflineOp> training_step_ops(const RooflineOptions& opt);
Roofline roofline(const RooflineOptions& opt, const GpuPeaks& gpu);

// A table grouped by kernel class (kind), then totals; per_op adds every op.
std::string roofline_table(const Roofline& r, bool per_op);
nlohmann::json roofline_json(const Roofline& r);

}  // namespace rz
