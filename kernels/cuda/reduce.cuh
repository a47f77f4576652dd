// CUDA reductions and small broadcasts the op front-ends and optimizers need:
// the sum of a tensor, the bias gradient and bias add of linear, scaling by a
// device scalar (loss backward without a host sync), and the multi-tensor sum
// of squares and scaling of gradient clipping.
//
// Determinism: no atomics. Sums accumulate per thread in double, reduce within
// a block in a fixed tree (cuda_common::block_sum) and combine per-block
// partials in one final block; grids depend on the sizes only, never on the
// device, so results are bitwise reproducible run to run and across GPUs.
// Partials come from the stream-ordered pool (cudaMallocAsync/cudaFreeAsync on
// `stream`) unless the caller passes them.
//
// T is float or bf16 (math in fp32, sums in double). All pointers are device
// pointers; every launcher returns the first CUDA error (cudaGetLastError) or
// cudaErrorInvalidValue for bad arguments. CPU twins: kernels/cpu/reduce.h and
// sum_cpu in kernels/cpu/elementwise.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"
#include "kernels/cuda/optim.cuh"

namespace rz {

// *out = sum of x[0..n) (device fp32 scalar; 0 for n == 0).
template <typename T>
cudaError_t sum_cuda(const T* x, int64_t n, float* out, cudaStream_t stream);

// db[c] = sum over r of dy[r * cols + c] (writes, never adds; fp32). The bias
// gradient of linear; rows are summed in order, in double, per column.
template <typename T>
cudaError_t col_sum_cuda(const T* dy, int64_t rows, int64_t cols, float* db, cudaStream_t stream);

// y[r * cols + c] += b[c], in fp32, rounded once to T. The bias add of linear.
template <typename T>
cudaError_t bias_add_cuda(T* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream);

// y[i] = x[i] * s[0], s a device fp32 scalar (no host sync). y may equal x.
template <typename T>
cudaError_t scale_by_scalar_cuda(const T* x, const float* s, T* y, int64_t n, cudaStream_t stream);

// y[i] = s[0] for i < n, s a device fp32 scalar.
template <typename T>
cudaError_t fill_from_scalar_cuda(T* y, const float* s, int64_t n, cudaStream_t stream);

// Sum of squares over every fp32 tensor of `list` (the chunk table of
// kernels/cuda/optim.cuh; list.params are ignored, list.grads[t] == nullptr
// skips tensor t). `partials`: caller-owned device scratch of list.total_chunks
// doubles (may be nullptr when that is 0). *out (device double) = the total,
// combined in chunk order: partial c is chunk c's fixed-tree sum, then one block
// adds the partials in a fixed order (bitwise reproducible).
cudaError_t sum_squares_multi_cuda(const TensorList& list, double* partials, double* out,
                                   cudaStream_t stream);

// Gradient clipping without a host sync: coef = max_norm / (sqrt(*sumsq) + 1e-6)
// (torch.nn.utils.clip_grad_norm_); when coef < 1 every list.grads[t] is
// multiplied by (float)coef in place, else nothing changes (also when *sumsq is
// NaN). max_norm >= 0 (0 zeroes every gradient).
cudaError_t clip_scale_multi_cuda(const TensorList& list, const double* sumsq, double max_norm,
                                  cudaStream_t stream);

}  // namespace rz
