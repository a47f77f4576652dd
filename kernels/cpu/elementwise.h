// Elementwise CPU kernels over contiguous arrays of n elements (the twins of
// kernels/cuda/elementwise.cu). Outputs are written, never accumulated, except
// axpy, which is an explicit accumulate (y += alpha * x).
#pragma once

#include <cstdint>

namespace rz {

template <typename T> void fill_cpu(T* y, T value, int64_t n);
template <typename T> void axpy_cpu(T alpha, const T* x, T* y, int64_t n);  // y += alpha*x
template <typename T> void scale_cpu(T* y, T alpha, int64_t n);             // y *= alpha
template <typename T> void add_cpu(const T* a, const T* b, T* c, int64_t n);  // c = a + b
template <typename T> void sub_cpu(const T* a, const T* b, T* c, int64_t n);  // c = a - b
template <typename T> void mul_cpu(const T* a, const T* b, T* c, int64_t n);  // c = a * b
// Sum in double, in a fixed order for a given thread count (deterministic).
template <typename T> double sum_cpu(const T* x, int64_t n);
// dst[i] = convert(src[i]) with the rules of kernels/common/convert.h.
template <typename S, typename D> void cast_cpu(const S* src, D* dst, int64_t n);

}  // namespace rz
