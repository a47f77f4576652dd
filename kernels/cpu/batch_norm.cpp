// Batch norm over [M rows, C channels] (NHWC flattened). Channels are
// innermost, so every pass is a walk over rows with a vectorizable loop over c.
// Traffic (elements of M*C): training forward 3 reads of x (mean, variance,
// normalize) + 1 write of y; eval forward 1 read + 1 write; backward 2 reads
// of x and dy (sums, then dx) + 1 write of dx (1 pass when only dx in eval).
// Determinism: per-channel sums are taken over fixed row blocks whose size
// depends on M only (never on the thread count); each block sums into its own
// double partial array and the partials are added in block order, so results
// are bitwise identical for any number of threads. Two-pass variance (no
// E[x^2] - E[x]^2 cancellation).
#include "kernels/cpu/batch_norm.h"

#include "kernels/common/bn_math.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace rz {

namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;

struct RowBlocks {
  int64_t size, count;
};

RowBlocks row_blocks(int64_t M) {
  constexpr int64_t kMaxBlocks = 64;
  constexpr int64_t kMinRows = 32;
  const int64_t size = std::max(kMinRows, (M + kMaxBlocks - 1) / kMaxBlocks);
  return {size, (M + size - 1) / size};
}

// Returns K*C sums: out[k*C + c] = sum over rows of what add_row(r, acc) adds
// to acc[k*C + c].
template <class AddRow>
std::vector<double> channel_sums(int64_t M, int64_t C, int64_t K, AddRow add_row) {
  const RowBlocks rb = row_blocks(M);
  const int64_t stride = K * C;
  std::vector<double> partial(static_cast<size_t>(rb.count * stride), 0.0);
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
  for (int64_t b = 0; b < rb.count; ++b) {
    double* acc = partial.data() + b * stride;
    const int64_t r1 = std::min(M, (b + 1) * rb.size);
    for (int64_t r = b * rb.size; r < r1; ++r) add_row(r, acc);
  }
  std::vector<double> out(static_cast<size_t>(stride), 0.0);
  for (int64_t b = 0; b < rb.count; ++b)
    for (int64_t i = 0; i < stride; ++i) out[i] += partial[b * stride + i];
  return out;
}

// y = (x - shift[c]) * scale[c] + beta[c], all in double, rounded once.
template <class T>
void normalize_rows(const T* x, const double* shift, const double* scale, const T* beta, T* y,
                    int64_t M, int64_t C) {
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
  for (int64_t r = 0; r < M; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      yr[c] = static_cast<T>((static_cast<double>(xr[c]) - shift[c]) * scale[c] +
                             static_cast<double>(beta[c]));
  }
}

}  // namespace

template <class T>
void batch_norm_fwd_train_cpu(const T* x, const T* gamma, const T* beta, T* y, T* save_mean,
                              T* save_invstd, T* running_mean, T* running_var, int64_t M, int64_t C,
                              double momentum, double eps) {
  const double inv_m = 1.0 / static_cast<double>(M);
  std::vector<double> mean = channel_sums(M, C, 1, [=](int64_t r, double* acc) {
    const T* xr = x + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(xr[c]);
  });
  for (double& m : mean) m *= inv_m;
  const double* mu = mean.data();
  std::vector<double> var = channel_sums(M, C, 1, [=](int64_t r, double* acc) {
    const T* xr = x + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const double d = static_cast<double>(xr[c]) - mu[c];
      acc[c] += d * d;
    }
  });
  std::vector<double> scale(static_cast<size_t>(C));
  // M == 1: the unbiased correction M/(M-1) is undefined; keep the biased 0.
  const double unbias = M > 1 ? static_cast<double>(M) / static_cast<double>(M - 1) : 1.0;
  for (int64_t c = 0; c < C; ++c) {
    var[c] *= inv_m;
    const double invstd = 1.0 / std::sqrt(var[c] + eps);
    scale[c] = invstd * static_cast<double>(gamma[c]);
    if (save_mean != nullptr) save_mean[c] = static_cast<T>(mean[c]);
    if (save_invstd != nullptr) save_invstd[c] = static_cast<T>(invstd);
    if (running_mean != nullptr)
      running_mean[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(running_mean[c]) +
                                       momentum * mean[c]);
    if (running_var != nullptr)
      running_var[c] = static_cast<T>((1.0 - momentum) * static_cast<double>(running_var[c]) +
                                      momentum * var[c] * unbias);
  }
  normalize_rows(x, mean.data(), scale.data(), beta, y, M, C);
}

template <class T>
void batch_norm_fwd_eval_cpu(const T* x, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, T* y, int64_t M, int64_t C, double eps) {
  std::vector<double> shift(static_cast<size_t>(C)), scale(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    shift[c] = static_cast<double>(running_mean[c]);
    scale[c] = static_cast<double>(gamma[c]) / std::sqrt(static_cast<double>(running_var[c]) + eps);
  }
  normalize_rows(x, shift.data(), scale.data(), beta, y, M, C);
}

template <class T>
void batch_norm_bwd_cpu(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                        T* dx, T* dgamma, T* dbeta, int64_t M, int64_t C, bool training) {
  std::vector<double> mu(static_cast<size_t>(C)), istd(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    mu[c] = static_cast<double>(mean[c]);
    istd[c] = static_cast<double>(invstd[c]);
  }
  // sums[c] = sum dy, sums[C + c] = sum dy * (x - mean); times invstd that is sum dy * xhat.
  std::vector<double> sums;
  if (dgamma != nullptr || dbeta != nullptr || (dx != nullptr && training)) {
    const double* mup = mu.data();
    sums = channel_sums(M, C, 2, [=](int64_t r, double* acc) {
      const T* xr = x + r * C;
      const T* dyr = dy + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const double g = static_cast<double>(dyr[c]);
        acc[c] += g;
        acc[C + c] += g * (static_cast<double>(xr[c]) - mup[c]);
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      if (dbeta != nullptr) dbeta[c] = static_cast<T>(sums[c]);
      if (dgamma != nullptr) dgamma[c] = static_cast<T>(sums[C + c] * istd[c]);
    }
  }
  if (dx == nullptr) return;
  // dx = k1 * (dy - mean_dy - (x - mean) * k2) with k1 = gamma*invstd,
  // mean_dy = sum(dy)/M, k2 = invstd * sum(dy*xhat)/M; eval: mean_dy = k2 = 0.
  const double inv_m = 1.0 / static_cast<double>(M);
  std::vector<double> k1(static_cast<size_t>(C)), mdy(static_cast<size_t>(C), 0.0),
      k2(static_cast<size_t>(C), 0.0);
  for (int64_t c = 0; c < C; ++c) {
    const BnBackwardCoeffs k = bn_backward_coeffs(static_cast<double>(gamma[c]), istd[c],
                                                  training ? sums[c] : 0.0,
                                                  training ? sums[C + c] : 0.0, inv_m, training);
    k1[c] = k.k1;
    mdy[c] = k.mdy;
    k2[c] = k.k2;
  }
  const double *k1p = k1.data(), *mdyp = mdy.data(), *k2p = k2.data(), *mup = mu.data();
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
  for (int64_t r = 0; r < M; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    T* dxr = dx + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      dxr[c] = static_cast<T>(bn_backward_dx(k1p[c], mdyp[c], k2p[c], static_cast<double>(dyr[c]),
                                             static_cast<double>(xr[c]) - mup[c]));
  }
}

template <class T>
void bn_fold_cpu(const T* gamma, const T* beta, const T* running_mean, const T* running_var,
                 T* scale, T* shift, int64_t C, double eps) {
  for (int64_t c = 0; c < C; ++c) {
    const BnFold f = bn_fold(static_cast<double>(gamma[c]), static_cast<double>(beta[c]),
                             static_cast<double>(running_mean[c]),
                             static_cast<double>(running_var[c]), eps);
    scale[c] = static_cast<T>(f.scale);
    shift[c] = static_cast<T>(f.shift);
  }
}

#define RZ_INSTANTIATE(T)                                                                        \
  template void bn_fold_cpu<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, double); \
  template void batch_norm_fwd_train_cpu<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*,    \
                                            int64_t, int64_t, double, double);                   \
  template void batch_norm_fwd_eval_cpu<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                           int64_t, int64_t, double);                            \
  template void batch_norm_bwd_cpu<T>(const T*, const T*, const T*, const T*, const T*, T*, T*,  \
                                      T*, int64_t, int64_t, bool);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
