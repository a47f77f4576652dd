// CUDA twins of kernels/cpu/elementwise.h. Each launcher enqueues on `stream`
// and returns the launch status (cudaGetLastError) for the caller to check.
// Arithmetic is instantiated for float, double and bf16; bf16 elements are
// computed in fp32 and rounded once (kernels/common/convert.h). The scalar
// factors of axpy and scale are passed as double and applied in the element's
// compute type (fp32 for float and bf16, fp64 for double), so a factor such as
// 1/n is not first rounded to bf16.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

template <typename T> cudaError_t fill_cuda(T* y, T value, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t axpy_cuda(double alpha, const T* x, T* y, int64_t n, cudaStream_t stream);  // y += alpha x
template <typename T> cudaError_t scale_cuda(T* y, double alpha, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t add_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t sub_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t mul_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream);
template <typename S, typename D>
cudaError_t cast_cuda(const S* src, D* dst, int64_t n, cudaStream_t stream);

}  // namespace rz
