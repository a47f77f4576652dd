// Differentiable op front-ends: each checks shapes and dtypes, dispatches to
// the kernel for the tensor's device, and (when a gradient is needed) records
// its backward right next to the forward. Image tensors are NHWC; conv
// weights are KRSC [out, kh, kw, in].
//
// All inputs of an op must be on the same device. The CPU backend computes in
// f32 or f64 and all inputs of an op share one dtype. The CUDA backend stores
// f32 or bf16 and computes in fp32; for bf16 mixed precision (DESIGN decision
// 2) its ops accept bf16 activations together with fp32 parameters: conv2d
// and linear round an fp32 weight to bf16 for the product (through `cast`, so
// the weight's gradient arrives in fp32), linear's bias, batch norm's weight,
// bias and running statistics stay fp32, and the losses take fp32 targets and
// return an fp32 loss.
#pragma once

#include <array>

#include "engine/tensor.h"

namespace rz {

// ---- elementwise (same shapes) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double factor);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor sum(const Tensor& x);   // all elements -> shape [] (one element)
Tensor mean(const Tensor& x);  // all elements -> shape []

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator*(const Tensor& a, double f) { return scale(a, f); }
inline Tensor operator*(double f, const Tensor& a) { return scale(a, f); }

// Inverted dropout: zeroes each element with probability p and scales the
// rest by 1/(1-p); the mask comes from `gen` (so a seed reproduces a run).
Tensor dropout(const Tensor& x, double p, Generator& gen);

// Differentiable dtype conversion: x rounded to `dtype`; the gradient is
// converted back to x's dtype. Returns x itself when the dtype already matches.
Tensor cast(const Tensor& x, DType dtype);

// ---- shape (views sharing storage) ----
Tensor reshape(const Tensor& x, Shape shape);  // one dimension may be -1
Tensor flatten(const Tensor& x);               // [N, ...] -> [N, rest]
// 4-D axis permutation into a new contiguous tensor: output dimension d is
// input dimension perm[d]. {0, 2, 3, 1}: NCHW -> NHWC; {0, 3, 1, 2}: NHWC -> NCHW.
Tensor permute(const Tensor& x, std::array<int, 4> perm);

// ---- convolution: x [N, H, W, C], w [K, R, S, C] -> [N, OH, OW, K], no bias ----
struct Conv2dOptions {
  int64_t stride = 1;
  int64_t padding = 0;
};
Tensor conv2d(const Tensor& x, const Tensor& w, Conv2dOptions opt = {});

// ---- batch norm over N, H, W of x [N, H, W, C] (any rank >= 2, channels last) ----
// training: normalizes with the batch statistics and updates running_mean /
// running_var in place (momentum, unbiased variance, like PyTorch); eval: uses
// the running statistics. running_* may be undefined in training (no tracking).
struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
};
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var,
                    BatchNormOptions opt = {});

// ---- synchronized batch norm (SyncBN, timm's --sync-bn) ----
// Training: the statistics are those of the rows of every rank of `comm`
// (their sums all-reduced, with the row count), and backward all-reduces the
// sums of dy and dy * (x - mean) that dx needs; gamma's and beta's gradients
// are this rank's own (data-parallel training averages them). Every rank
// must call it in the same order. Eval: batch_norm2d. Same argument rules as
// batch_norm2d; on CUDA, comm must take CUDA tensors (NCCL).
class Communicator;
Tensor sync_batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                         const Tensor& running_var, BatchNormOptions opt, Communicator& comm);

// ---- batch norm fused with what follows it: y = [relu](batch_norm2d(x) [+ residual]) ----
// residual may be undefined. One autograd node, as few passes over memory as
// the statistics allow (kernels/cpu/fused_bn.h, kernels/cuda/fused_bn.cuh);
// the same values and gradients as composing the ops. Parameter dtypes as
// batch_norm2d.
// batch_sums (training only; may be undefined): f64 [2, C] on x's device, the
// sum and the sum of squares of x over its rows, already computed by x's
// producer (conv_bn_act); the statistics pass is skipped.
Tensor batch_norm_act(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                      const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                      BatchNormOptions opt, bool relu, const Tensor& batch_sums = Tensor());

// ---- conv2d that also hands its output's statistics to the op after it ----
// y = conv2d(x, w, opt) (same autograd node) and, when the layer's plan
// (engine/conv_autotune.h, ConvFusion::BnStats) is a native kernel that can
// produce them here, sums = f64 [2, segments, K]: per segment of
// N*OH*OW / segments consecutive output rows (segments = N: per image), the
// sum and the sum of squares of every channel of the stored y. sums is
// undefined on the CPU, for cuDNN plans and when the kernel refuses (e.g. a
// segment that is not a whole number of its row tiles); consumers then run
// their own statistics pass.
struct ConvWithSums {
  Tensor y, sums;
};
ConvWithSums conv2d_with_sums(const Tensor& x, const Tensor& w, Conv2dOptions opt,
                              int64_t segments = 1);

// ---- a convolution and the batch norm after it: ----
//   y = [relu](batch_norm2d(conv2d(x, w, copt)) [+ residual])
// The same values and gradients as batch_norm_act(conv2d(...)). On CUDA, when
// the layer's plan (engine/conv_autotune.h, ConvFusion) is a native kernel,
// that kernel's epilogue takes over part of the BN: in training it sums the
// BN statistics of the stored conv output (BN then needs one pass instead of
// two; the sums are added in another order than BN's own, so results agree
// to rounding); in eval mode without residual and without gradients it
// applies the folded BN and the ReLU to the fp32 accumulator (no BN pass at
// all; the conv output is rounded once instead of twice). Everywhere else
// (CPU, cuDNN plans, refusals) it is exactly the composition.
Tensor conv_bn_act(const Tensor& x, const Tensor& w, Conv2dOptions copt, const Tensor& residual,
                   const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                   const Tensor& running_var, BatchNormOptions opt, bool relu);

// ---- the fused end of an SE-ResNet bottleneck (one op, forward and backward) ----
//   u = batch_norm2d(t, gamma, beta, running_mean, running_var, opt)
//   s = sigmoid(linear(relu(linear(global_avg_pool(u), w1, b1)), w2, b2))
//   out = relu(channel_scale(u, s) + shortcut)
// t, shortcut [N, H, W, C]; w1 [rd, C], b1 [rd], w2 [C, rd], b2 [C]. The same
// values and gradients as composing those ops, in two passes over the big
// tensors each way (kernels/cpu/fused_se.h, kernels/cuda/fused_se.cuh). On
// CUDA t and shortcut are f32 or bf16 and every parameter is f32.
// image_sums (may be undefined): f64 [2, N, C] on t's device, per image and
// channel the sum and the sum of squares of t, already computed by t's
// producer (conv2d_with_sums with segments = N); the statistics pass over t
// is skipped.
Tensor se_block_tail(const Tensor& t, const Tensor& shortcut, const Tensor& gamma,
                     const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                     const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                     BatchNormOptions opt = {}, const Tensor& image_sums = Tensor());

// ---- squeeze-excitation multiply: x [N, H, W, C] * s [N, C] (or [N, 1, 1, C]) ----
Tensor channel_scale(const Tensor& x, const Tensor& s);

// ---- pooling, NHWC ----
struct Pool2dOptions {
  int64_t kernel = 2;
  int64_t stride = 2;
  int64_t padding = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg pool only
};
Tensor max_pool2d(const Tensor& x, Pool2dOptions opt);
Tensor avg_pool2d(const Tensor& x, Pool2dOptions opt);
Tensor global_avg_pool(const Tensor& x);  // [N, H, W, C] -> [N, C]

// ---- linear: x [N, in], w [out, in], b [out] (may be undefined) -> [N, out] ----
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- losses (means over all elements; results have shape []) ----
// logits and targets [N, L]; pos_weight [L] or undefined (PyTorch BCEWithLogitsLoss).
Tensor bce_with_logits(const Tensor& logits, const Tensor& targets,
                       const Tensor& pos_weight = Tensor());
Tensor mse_loss(const Tensor& a, const Tensor& b);

// Shared argument checks of the front-ends.
void check_same(const Tensor& a, const Tensor& b, const char* op);  // dtype and device
// The weight an op multiplies x with: w itself when the dtypes match, or w
// cast to bf16 when x is a bf16 CUDA activation and w an fp32 master weight.
Tensor weight_for(const Tensor& x, const Tensor& w, const char* op);

}  // namespace rz
