// CPU twins of kernels/cuda/reduce.cuh (the sum of a tensor is sum_cpu in
// kernels/cpu/elementwise.h): the bias gradient and bias add of linear and the
// sum of squares of gradient clipping. Sums accumulate in double, in order.
#pragma once

#include <cstdint>

namespace rz {

// db[c] = sum over r of dy[r * cols + c] (writes, never adds).
template <typename T>
void col_sum_cpu(const T* dy, int64_t rows, int64_t cols, T* db);
// y[r * cols + c] += b[c].
template <typename T>
void bias_add_cpu(T* y, const T* b, int64_t rows, int64_t cols);
// sum of x[i]^2 over n elements.
template <typename T>
double sum_squares_cpu(const T* x, int64_t n);

}  // namespace rz
