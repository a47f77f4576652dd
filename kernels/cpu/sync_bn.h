// CPU reference twin of the pieces of synchronized batch norm (SyncBN): batch
// norm whose statistics are those of the rows of every rank. Each rank sums
// its own rows, the sums are all-reduced (engine/comm.h), and both passes
// finish with the global sums. NHWC viewed as [M rows, C channels]; sums are
// double. The normalization itself is batch_norm_fwd_eval_cpu with the batch
// mean and variance in place of the running ones.
#pragma once

#include <cstdint>

namespace rz {

// sums[0..C) = sum over rows of x, sums[C..2C) = sum of x^2, sums[2C] = M
// (the row count, so that the all-reduced array carries the global count).
template <class T>
void sync_bn_sums_cpu(const T* x, int64_t M, int64_t C, double* sums);

// From all-reduced sums (2C + 1): mean[c] and biased var[c]; running_mean /
// running_var (nullptr: skipped) updated in place (bn_running_update).
template <class T>
void sync_bn_stats_cpu(const double* sums, int64_t C, double momentum, T* mean, T* var, T* running_mean,
                       T* running_var);

// Backward sums of this rank's rows: sums[0..C) = sum dy, sums[C..2C) = sum
// dy * (x - mean).
template <class T>
void sync_bn_grad_sums_cpu(const T* x, const T* dy, const T* mean, int64_t M, int64_t C, double* sums);

// This rank's parameter gradients from its own backward sums (before they
// are all-reduced; data-parallel training averages them with the rest):
// dgamma = sum dy * (x - mean) * invstd, dbeta = sum dy.
template <class T>
void sync_bn_param_grads_cpu(const double* grad_sums, const T* invstd, int64_t C, T* dgamma, T* dbeta);

// dx from all-reduced backward sums and the global row count n:
//   dx = gamma*invstd * (dy - sum_dy/n - (x - mean) * invstd^2 * sum_dy_xc/n).
template <class T>
void sync_bn_grad_input_cpu(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                            const double* grad_sums, double n, int64_t M, int64_t C, T* dx);

}  // namespace rz
