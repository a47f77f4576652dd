// CPU twins of the CUDA reductions (see reduce.h). Plain sequential loops:
// one read per element (col_sum, sum_squares) or one read and write (bias_add);
// col_sum keeps one double accumulator per column and walks dy row by row.
#include "kernels/cpu/reduce.h"

#include <cstddef>
#include <vector>

namespace rz {

template <typename T>
void col_sum_cpu(const T* dy, int64_t rows, int64_t cols, T* db) {
  std::vector<double> acc(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      acc[static_cast<size_t>(c)] += static_cast<double>(dy[r * cols + c]);
  for (int64_t c = 0; c < cols; ++c) db[c] = static_cast<T>(acc[static_cast<size_t>(c)]);
}

template <typename T>
void bias_add_cpu(T* y, const T* b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] += b[c];
}

template <typename T>
double sum_squares_cpu(const T* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return s;
}

#define RZ_INSTANTIATE(T)                                        \
  template void col_sum_cpu<T>(const T*, int64_t, int64_t, T*);  \
  template void bias_add_cpu<T>(T*, const T*, int64_t, int64_t); \
  template double sum_squares_cpu<T>(const T*, int64_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
