// CPU reference twin of the fused batch norm (+ residual add)(+ ReLU) used at
// every BN site of the network but the SE block tail: the stem and
// conv1/conv2 of each bottleneck (BN + ReLU), the shortcut's BN (plain BN),
// and blocks without SE (BN + residual + ReLU). NHWC input viewed as
// [M = N*H*W rows, C channels]; per-channel vectors have C elements. T is
// float or double for every argument (the CPU backend keeps one dtype per
// op); the CUDA twin (kernels/cuda/fused_bn.cuh) takes fp32 per-channel
// vectors and float or bf16 activations.
//
// Meaning (the composition of batch_norm_*_cpu, add_cpu and relu_*_cpu):
//   v = (x - mean) * invstd * gamma + beta  [+ residual]
//   y = relu(v) when opt.relu, else v.
// Training: mean and the biased variance var are the batch statistics of x,
// invstd = 1 / sqrt(var + eps); running_mean / running_var (each may be
// nullptr) are updated in place with momentum and the unbiased variance
// (M == 1: the biased 0), as batch_norm_fwd_train_cpu does. Eval: mean =
// running_mean and invstd = 1 / sqrt(running_var + eps) (both required, not
// modified). save_mean / save_invstd (each may be nullptr) receive the
// statistics used, in both modes, which is what the backward takes.
//
// Statistics are one pass of shifted sums in double (kernels/common/se_math.h:
// shift = the channel's first value) over fixed row blocks whose size depends
// on M only, so results do not depend on the thread count. All math in
// double, rounded to T once per output.
#pragma once

#include <cstdint>

namespace rz {

struct FusedBnOptions {
  bool training = true;   // batch statistics (+ running update) or running statistics
  bool relu = false;      // y = relu(BN(x) [+ residual])
  double momentum = 0.1;  // forward only
  double eps = 1e-5;      // forward only
};

// residual may be nullptr (no add). Requires M >= 1, C >= 1.
// batch_sums (training only; may be nullptr): [2][C] doubles, the sum and the
// sum of squares of x over the M rows, already computed by the producer of x
// (the convolution epilogue of kernels/cuda/conv_native.cuh); the statistics
// pass is then skipped and the moments come from the raw sums
// (bn_moments_from_shifted with shift 0).
template <class T>
void fused_bn_fwd_cpu(const T* x, const T* residual, const T* gamma, const T* beta, T* y,
                      T* save_mean, T* save_invstd, T* running_mean, T* running_var, int64_t M,
                      int64_t C, const FusedBnOptions& opt, const double* batch_sums = nullptr);

// Backward of the forward above; uses opt.training and opt.relu. mean and
// invstd are the forward's save_mean / save_invstd. y is the forward output
// (read only when opt.relu, for the mask; may be nullptr otherwise). With
//   g = opt.relu ? dy * [y > 0] : dy,   xhat = (x - mean) * invstd,
// writes (never adds):
//   dresidual = g                                        (nullptr: skipped)
//   dgamma = sum_rows g * xhat,  dbeta = sum_rows g      (nullptr: skipped)
//   dx = gamma*invstd/M * (M*g - sum(g) - xhat*sum(g*xhat))   (training)
//   dx = g * gamma * invstd                                   (eval)
//                                                        (nullptr: skipped)
// dresidual may alias dy (in place).
template <class T>
void fused_bn_bwd_cpu(const T* x, const T* y, const T* dy, const T* gamma, const T* mean,
                      const T* invstd, T* dx, T* dresidual, T* dgamma, T* dbeta, int64_t M,
                      int64_t C, const FusedBnOptions& opt);

}  // namespace rz
