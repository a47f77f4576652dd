// CUDA twins of kernels/cpu/elementwise.h. Each launcher enqueues on `stream`
// and returns the launch status (cudaGetLastError) for the caller to check.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

template <typename T> cudaError_t fill_cuda(T* y, T value, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t axpy_cuda(T alpha, const T* x, T* y, int64_t n, cudaStream_t stream);
template <typename T> cudaError_t scale_cuda(T* y, T alpha, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t add_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t sub_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t mul_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename S, typename D>
cudaError_t cast_cuda(const S* src, D* dst, int64_t n, cudaStream_t stream);

}  // namespace rz
