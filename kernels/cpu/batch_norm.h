// CPU reference twin of 2-D batch normalization. NHWC input viewed as
// [M = N*H*W rows, C channels]; per-channel vectors (gamma, beta, mean, ...)
// have C elements. gamma and beta are required (affine BN). Statistics and
// all reductions are computed in double and rounded to T once.
#pragma once

#include <cstdint>

namespace rz {

// Training forward: batch mean and biased variance var per channel;
//   y = (x - mean) * invstd * gamma + beta,   invstd = 1 / sqrt(var + eps).
// Writes save_mean and save_invstd (each may be nullptr when no backward
// follows). When running_mean / running_var are not nullptr they are updated
// in place:
//   running_mean = (1 - momentum) * running_mean + momentum * mean
//   running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
// (unbiased variance, like PyTorch). PyTorch refuses M == 1 in training; here
// M == 1 uses the biased variance (0) in the running update instead of
// dividing by zero. Requires M >= 1.
template <class T>
void batch_norm_fwd_train_cpu(const T* x, const T* gamma, const T* beta, T* y, T* save_mean,
                              T* save_invstd, T* running_mean, T* running_var, int64_t M, int64_t C,
                              double momentum, double eps);

// Eval forward: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
template <class T>
void batch_norm_fwd_eval_cpu(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, T* y, int64_t M, int64_t C, double eps);

// Backward. mean / invstd are the saved batch statistics (training) or
// running_mean and 1 / sqrt(running_var + eps) (eval; the caller computes
// them). With xhat = (x - mean) * invstd it writes (never adds):
//   dgamma = sum_rows dy * xhat,   dbeta = sum_rows dy,
//   dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat))   (training:
//        the statistics depend on x),
//   dx = dy * gamma * invstd                                     (eval:
//        the statistics are constants).
// dx, dgamma and dbeta may each be nullptr (skipped).
template <class T>
void batch_norm_bwd_cpu(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                        T* dx, T* dgamma, T* dbeta, int64_t M, int64_t C, bool training);

// scale[c], shift[c] = bn_fold(gamma[c], beta[c], running_mean[c],
// running_var[c], eps) (kernels/common/bn_math.h), computed in double.
template <class T>
void bn_fold_cpu(const T* gamma, const T* beta, const T* running_mean, const T* running_var,
                 T* scale, T* shift, int64_t C, double eps);

}  // namespace rz
