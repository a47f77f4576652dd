// Memory traffic: one read per input and one write per output element; these
// loops are bandwidth-bound and vectorize as written (-O3 -march=native).
// Only sum_cpu reduces: per-thread partials in double, combined in thread order.
#include "kernels/cpu/elementwise.h"

#include <omp.h>

#include <vector>

#include "kernels/common/convert.h"

namespace rz {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

template <typename T> void fill_cpu(T* y, T value, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

template <typename T> void axpy_cpu(T alpha, const T* x, T* y, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T> void scale_cpu(T* y, T alpha, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] *= alpha;
}

template <typename T> void add_cpu(const T* a, const T* b, T* c, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) c[i] = a[i] + b[i];
}

template <typename T> void sub_cpu(const T* a, const T* b, T* c, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) c[i] = a[i] - b[i];
}

template <typename T> void mul_cpu(const T* a, const T* b, T* c, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) c[i] = a[i] * b[i];
}

template <typename T> double sum_cpu(const T* x, int64_t n) {
  const int threads = n > kParallelMin ? omp_get_max_threads() : 1;
  std::vector<double> partial(static_cast<size_t>(threads), 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
    double s = 0.0;
    for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(x[i]);
    partial[static_cast<size_t>(t)] = s;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

template <typename S, typename D> void cast_cpu(const S* src, D* dst, int64_t n) {
#pragma omp parallel for if (n > kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = convert_element<S, D>(src[i]);
}

#define RZ_INSTANTIATE_ARITH(T)                                      \
  template void fill_cpu<T>(T*, T, int64_t);                         \
  template void axpy_cpu<T>(T, const T*, T*, int64_t);               \
  template void scale_cpu<T>(T*, T, int64_t);                        \
  template void add_cpu<T>(const T*, const T*, T*, int64_t);         \
  template void sub_cpu<T>(const T*, const T*, T*, int64_t);         \
  template void mul_cpu<T>(const T*, const T*, T*, int64_t);         \
  template double sum_cpu<T>(const T*, int64_t);
RZ_INSTANTIATE_ARITH(float)
RZ_INSTANTIATE_ARITH(double)
template void fill_cpu<uint8_t>(uint8_t*, uint8_t, int64_t);
template void fill_cpu<int64_t>(int64_t*, int64_t, int64_t);
template void fill_cpu<bf16>(bf16*, bf16, int64_t);

#define RZ_INSTANTIATE_CAST_FROM(S)                              \
  template void cast_cpu<S, float>(const S*, float*, int64_t);   \
  template void cast_cpu<S, double>(const S*, double*, int64_t); \
  template void cast_cpu<S, bf16>(const S*, bf16*, int64_t);     \
  template void cast_cpu<S, uint8_t>(const S*, uint8_t*, int64_t); \
  template void cast_cpu<S, int64_t>(const S*, int64_t*, int64_t);
RZ_INSTANTIATE_CAST_FROM(float)
RZ_INSTANTIATE_CAST_FROM(double)
RZ_INSTANTIATE_CAST_FROM(bf16)
RZ_INSTANTIATE_CAST_FROM(uint8_t)
RZ_INSTANTIATE_CAST_FROM(int64_t)

}  // namespace rz
