// CUDA twin of kernels/cpu/batch_norm.h: 2-D batch norm on NHWC viewed as
// [M = N*H*W rows, C channels]. Activations x, y, dy, dx are T (float or
// bf16); the per-channel vectors gamma, beta, mean, invstd, running stats,
// dgamma and dbeta are always fp32 (fp32 master weights and BN statistics,
// DESIGN decision 2). Same formulas and argument order as the CPU twin, plus
// the stream.
//
// Reduction scheme (deterministic, no atomics): a two-pass partial-sums scheme.
//   pass 1: grid (ceil(C/32) channel tiles, R row chunks); R depends on M only
//           (R = min(ceil(M/64), 256)), so results never depend on the GPU.
//           Block 32 x 8: threadIdx.x is the channel, threadIdx.y one of 8 row
//           lanes striding over the chunk's rows in order; fp32 per-thread sums
//           are combined by a fixed shared-memory tree into partial[r][k][c];
//   pass 2: one thread per channel adds the R partials in chunk order in fp64
//           and computes the per-channel results (mean, invstd, coefficients).
// The partials workspace (R*K*C floats + a few C-vectors) comes from the
// stream-ordered pool (cudaMallocAsync / cudaFreeAsync on `stream`), so
// callers pass no workspace. Variance is two-pass (sum (x - mean)^2), no
// E[x^2] - E[x]^2 cancellation.
//
// Each launcher returns the first error of its allocation and launches
// (cudaGetLastError after each launch). C == 0 does nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

// Training forward: batch mean / biased variance; y = (x - mean) * invstd *
// gamma + beta. save_mean / save_invstd may be nullptr; running_mean /
// running_var (nullptr: skipped) are updated in place with momentum and the
// unbiased variance (M == 1: the biased one). M < 1 returns
// cudaErrorInvalidValue.
template <typename T>
cudaError_t batch_norm_fwd_train_cuda(const T* x, const float* gamma, const float* beta, T* y,
                                      float* save_mean, float* save_invstd, float* running_mean,
                                      float* running_var, int64_t M, int64_t C, double momentum,
                                      double eps, cudaStream_t stream);

// Eval forward: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
template <typename T>
cudaError_t batch_norm_fwd_eval_cuda(const T* x, const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var, T* y,
                                     int64_t M, int64_t C, double eps, cudaStream_t stream);

// The statistics eval-mode backward uses: mean = running_mean and
// invstd = 1 / sqrt(running_var + eps) (computed in double, stored fp32), the
// twin of the loop in the batch_norm2d front-end's CPU branch.
cudaError_t batch_norm_eval_stats_cuda(const float* running_mean, const float* running_var,
                                       float* mean, float* invstd, int64_t C, double eps,
                                       cudaStream_t stream);

// Backward; writes (never adds) dgamma = sum dy*xhat, dbeta = sum dy and
//   dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat))   (training)
//   dx = dy * gamma * invstd                                     (eval)
// with xhat = (x - mean) * invstd. dx, dgamma, dbeta may each be nullptr.
template <typename T>
cudaError_t batch_norm_bwd_cuda(const T* x, const T* dy, const float* gamma, const float* mean,
                                const float* invstd, T* dx, float* dgamma, float* dbeta, int64_t M,
                                int64_t C, bool training, cudaStream_t stream);

// scale[c], shift[c] = bn_fold(gamma[c], beta[c], running_mean[c],
// running_var[c], eps) in double, stored fp32: eval BN as the per-channel
// affine a convolution epilogue applies. Twin of bn_fold_cpu.
cudaError_t bn_fold_cuda(const float* gamma, const float* beta, const float* running_mean,
                         const float* running_var, float* scale, float* shift, int64_t C,
                         double eps, cudaStream_t stream);

}  // namespace rz
