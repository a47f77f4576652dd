// Row-parallel passes with fixed row blocks (their size depends on M only)
// and per-block double partials added in block order: bitwise identical for
// any thread count.
#include "kernels/cpu/sync_bn.h"

#include <algorithm>
#include <vector>

#include "kernels/common/bn_math.h"

namespace rz {

namespace {

constexpr int64_t kBlockRows = 256;

// out[k*C + c] = sum over rows of f(row, c, k) for k < K, over fixed blocks.
template <int K, class F>
void block_sums(int64_t M, int64_t C, double* out, F f) {
  const int64_t blocks = std::max<int64_t>(1, (M + kBlockRows - 1) / kBlockRows);
  std::vector<double> partial(static_cast<size_t>(blocks * K * C), 0.0);
#pragma omp parallel for schedule(static) if (M * C >= (int64_t{1} << 15))
  for (int64_t b = 0; b < blocks; ++b) {
    double* p = partial.data() + b * K * C;
    const int64_t r1 = std::min(M, (b + 1) * kBlockRows);
    for (int64_t r = b * kBlockRows; r < r1; ++r) f(r, p);
  }
  std::fill(out, out + K * C, 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = 0; i < K * C; ++i) out[i] += partial[static_cast<size_t>(b * K * C + i)];
}

}  // namespace

template <class T>
void sync_bn_sums_cpu(const T* x, int64_t M, int64_t C, double* sums) {
  block_sums<2>(M, C, sums, [&](int64_t r, double* p) {
    const T* row = x + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const double v = static_cast<double>(row[c]);
      p[c] += v;
      p[C + c] += v * v;
    }
  });
  sums[2 * C] = static_cast<double>(M);
}

template <class T>
void sync_bn_stats_cpu(const double* sums, int64_t C, double momentum, T* mean, T* var, T* running_mean,
                       T* running_var) {
  const double n = sums[2 * C];
  for (int64_t c = 0; c < C; ++c) {
    const BnBatchStats s = bn_stats_from_sums(sums[c], sums[C + c], n);
    mean[c] = static_cast<T>(s.mean);
    var[c] = static_cast<T>(s.var);
    if (running_mean) {
      double rm = static_cast<double>(running_mean[c]), rv = static_cast<double>(running_var[c]);
      bn_running_update(s.mean, s.var, n, momentum, &rm, &rv);
      running_mean[c] = static_cast<T>(rm);
      running_var[c] = static_cast<T>(rv);
    }
  }
}

template <class T>
void sync_bn_grad_sums_cpu(const T* x, const T* dy, const T* mean, int64_t M, int64_t C, double* sums) {
  block_sums<2>(M, C, sums, [&](int64_t r, double* p) {
    const T* xr = x + r * C;
    const T* gr = dy + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const double g = static_cast<double>(gr[c]);
      p[c] += g;
      p[C + c] += g * (static_cast<double>(xr[c]) - static_cast<double>(mean[c]));
    }
  });
}

template <class T>
void sync_bn_param_grads_cpu(const double* grad_sums, const T* invstd, int64_t C, T* dgamma, T* dbeta) {
  for (int64_t c = 0; c < C; ++c) {
    if (dgamma) dgamma[c] = static_cast<T>(grad_sums[C + c] * static_cast<double>(invstd[c]));
    if (dbeta) dbeta[c] = static_cast<T>(grad_sums[c]);
  }
}

template <class T>
void sync_bn_grad_input_cpu(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                            const double* grad_sums, double n, int64_t M, int64_t C, T* dx) {
  std::vector<BnBackwardCoeffs> k(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c)
    k[static_cast<size_t>(c)] = bn_backward_coeffs(static_cast<double>(gamma[c]), static_cast<double>(invstd[c]),
                                                   grad_sums[c], grad_sums[C + c], 1.0 / n, true);
#pragma omp parallel for schedule(static) if (M * C >= (int64_t{1} << 15))
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      const BnBackwardCoeffs& q = k[static_cast<size_t>(c)];
      const int64_t i = r * C + c;
      dx[i] = static_cast<T>(bn_backward_dx(q.k1, q.mdy, q.k2, static_cast<double>(dy[i]),
                                            static_cast<double>(x[i]) - static_cast<double>(mean[c])));
    }
  }
}

#define RZ_SYNC_BN_INSTANTIATE(T)                                                                                \
  template void sync_bn_sums_cpu<T>(const T*, int64_t, int64_t, double*);                                      \
  template void sync_bn_stats_cpu<T>(const double*, int64_t, double, T*, T*, T*, T*);                          \
  template void sync_bn_grad_sums_cpu<T>(const T*, const T*, const T*, int64_t, int64_t, double*);             \
  template void sync_bn_param_grads_cpu<T>(const double*, const T*, int64_t, T*, T*);                         \
  template void sync_bn_grad_input_cpu<T>(const T*, const T*, const T*, const T*, const T*, const double*,      \
                                          double, int64_t, int64_t, T*);
RZ_SYNC_BN_INSTANTIATE(float)
RZ_SYNC_BN_INSTANTIATE(double)
#undef RZ_SYNC_BN_INSTANTIATE

}  // namespace rz
