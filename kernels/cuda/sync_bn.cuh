// CUDA twin of kernels/cpu/sync_bn.h: the pieces of synchronized batch norm
// on NHWC viewed as [M rows, C channels]. x, dy, dx are T (float or bf16);
// gamma, mean, var, invstd and the running statistics are fp32; sums are
// double in device memory (the tensors the communicator all-reduces). Same
// formulas and argument order as the CPU twin, plus the stream.
//
// Reduction scheme (deterministic, no atomics): pass 1, grid (ceil(C/32)
// channel tiles, R row chunks, R = min(ceil(M/256), 128), a function of M
// only), one thread per channel summing its chunk's rows in order in double
// into partial[r][k][c]; pass 2, one thread per channel adds the R partials
// in chunk order. The partials come from the stream-ordered pool.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

template <typename T>
cudaError_t sync_bn_sums_cuda(const T* x, int64_t M, int64_t C, double* sums, cudaStream_t stream);

cudaError_t sync_bn_stats_cuda(const double* sums, int64_t C, double momentum, float* mean, float* var,
                               float* running_mean, float* running_var, cudaStream_t stream);

template <typename T>
cudaError_t sync_bn_grad_sums_cuda(const T* x, const T* dy, const float* mean, int64_t M, int64_t C,
                                   double* sums, cudaStream_t stream);

// dgamma and dbeta (each may be nullptr) from this rank's backward sums.
cudaError_t sync_bn_param_grads_cuda(const double* grad_sums, const float* invstd, int64_t C, float* dgamma,
                                     float* dbeta, cudaStream_t stream);

// n: the global row count, read from count[0] on the device (the forward's
// all-reduced sums[2C]).
template <typename T>
cudaError_t sync_bn_grad_input_cuda(const T* x, const T* dy, const float* gamma, const float* mean,
                                    const float* invstd, const double* grad_sums, const double* count, int64_t M,
                                    int64_t C, T* dx, cudaStream_t stream);

}  // namespace rz
