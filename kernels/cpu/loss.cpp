// Losses. BCE is over [rows, L] logits (a batch times 11 labels: tiny, so it
// runs on one thread). MSE compares feature maps for distillation (millions of
// elements): one read of a and b for the loss, one more plus the da/db writes
// for the gradient. Sums are taken over fixed blocks whose size depends on n
// only, combined in block order: the loss is bitwise identical for any number
// of threads (no OpenMP reduction, whose combine order is unspecified).
#include "kernels/cpu/loss.h"

#include <algorithm>
#include <vector>

#include "kernels/common/loss_math.h"

namespace rz {

namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kSumBlock = int64_t{1} << 14;

// sum over i < n of term(i), in double, blocked as described above.
template <class Term>
double blocked_sum(int64_t n, Term term) {
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    double acc = 0.0;
    const int64_t i1 = std::min(n, (b + 1) * kSumBlock);
    for (int64_t i = b * kSumBlock; i < i1; ++i) acc += term(i);
    partial[b] = acc;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

template <class T>
double bce_with_logits_fwd_cpu(const T* logits, const T* targets, const T* pos_weight, int64_t rows,
                               int64_t L) {
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < L; ++j) {
      const T pw = pos_weight != nullptr ? pos_weight[j] : T(1);
      total += static_cast<double>(bce_with_logits(logits[r * L + j], targets[r * L + j], pw));
    }
  return total / static_cast<double>(rows * L);
}

template <class T>
void bce_with_logits_bwd_cpu(const T* logits, const T* targets, const T* pos_weight, T dloss,
                             T* dlogits, int64_t rows, int64_t L) {
  const double scale = static_cast<double>(dloss) / static_cast<double>(rows * L);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < L; ++j) {
      const int64_t i = r * L + j;
      const T pw = pos_weight != nullptr ? pos_weight[j] : T(1);
      dlogits[i] = static_cast<T>(
          scale * static_cast<double>(bce_with_logits_grad(logits[i], targets[i], pw)));
    }
}

template <class T>
double mse_fwd_cpu(const T* a, const T* b, int64_t n) {
  const double total = blocked_sum(n, [=](int64_t i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    return d * d;
  });
  return total / static_cast<double>(n);
}

template <class T>
void mse_bwd_cpu(const T* a, const T* b, T dloss, T* da, T* db, int64_t n) {
  const double scale = 2.0 * static_cast<double>(dloss) / static_cast<double>(n);
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const double g = scale * (static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (da != nullptr) da[i] = static_cast<T>(g);
    if (db != nullptr) db[i] = static_cast<T>(-g);
  }
}

#define RZ_INSTANTIATE(T)                                                                          \
  template double bce_with_logits_fwd_cpu<T>(const T*, const T*, const T*, int64_t, int64_t);      \
  template void bce_with_logits_bwd_cpu<T>(const T*, const T*, const T*, T, T*, int64_t, int64_t); \
  template double mse_fwd_cpu<T>(const T*, const T*, int64_t);                                     \
  template void mse_bwd_cpu<T>(const T*, const T*, T, T*, T*, int64_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
