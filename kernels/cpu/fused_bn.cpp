// Fused batch norm (+ residual)(+ ReLU) over [M rows, C channels], the CPU
// twin of kernels/cuda/fused_bn.cu, with the same passes:
//   forward, training: pass 1 reads x (shifted sums per channel); pass 2 reads
//     x (+ residual) and writes y. 2 (3) reads + 1 write per element; eval:
//     pass 2 only.
//   backward: pass 1 reads dy (+ y for the ReLU mask) and x, writes dresidual
//     when asked (sums of g and g*(x - mean)); pass 2 reads g (dresidual, or
//     dy and y again) and x and writes dx.
// Determinism: per-channel sums are taken over fixed row blocks whose size
// depends on M only; each block sums into its own double partials, which are
// added in block order: bitwise identical for any number of threads.
#include "kernels/cpu/fused_bn.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/common/bn_math.h"
#include "kernels/common/se_math.h"
#include "kernels/cpu/thread_scratch.h"

namespace rz {

namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kChunkRows = 16;

// Returns K*C sums: out[k*C + c] = sum over rows (in fixed blocks) of what
// add_rows(r0, r1, acc) adds to acc[k*C + c] for rows r0 <= r < r1.
template <class AddRows>
std::vector<double> channel_sums(int64_t M, int64_t C, int64_t K, AddRows add_rows) {
  constexpr int64_t kMaxBlocks = 64, kMinRows = 32;
  const int64_t size = std::max(kMinRows, (M + kMaxBlocks - 1) / kMaxBlocks);
  const int64_t count = (M + size - 1) / size;
  const int64_t stride = K * C;
  std::vector<double> partial(static_cast<size_t>(count * stride), 0.0);
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
  for (int64_t b = 0; b < count; ++b) {
    double* acc = partial.data() + b * stride;
    add_rows(b * size, std::min(M, (b + 1) * size), acc);
  }
  std::vector<double> out(static_cast<size_t>(stride), 0.0);
  for (int64_t b = 0; b < count; ++b)
    for (int64_t i = 0; i < stride; ++i) out[i] += partial[b * stride + i];
  return out;
}

template <class T>
std::vector<T> to_vector(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// f(std::bool_constant<a>{}, std::bool_constant<b>{}): the inner loops are
// compiled once per flag combination, without branches, so they vectorize.
template <class F>
void with_flags(bool a, bool b, F f) {
  if (a) {
    if (b) f(std::true_type{}, std::true_type{});
    else f(std::true_type{}, std::false_type{});
  } else {
    if (b) f(std::false_type{}, std::true_type{});
    else f(std::false_type{}, std::false_type{});
  }
}

}  // namespace

template <class T>
void fused_bn_fwd_cpu(const T* x, const T* residual, const T* gamma, const T* beta, T* y,
                      T* save_mean, T* save_invstd, T* running_mean, T* running_var, int64_t M,
                      int64_t C, const FusedBnOptions& opt, const double* batch_sums) {
  const auto uc = static_cast<size_t>(C);
  std::vector<double> mean(uc), scale(uc);
  if (opt.training) {
    // Pass 1: shifted sums, shift = the channel's first value; or the given
    // raw sums (shift 0).
    std::vector<double> shift(uc, 0.0);
    std::vector<double> sums;
    if (batch_sums != nullptr) {
      sums.assign(batch_sums, batch_sums + 2 * C);
    } else {
      for (int64_t c = 0; c < C; ++c) shift[c] = static_cast<double>(x[c]);
      const double* sh = shift.data();
      sums = channel_sums(M, C, 2, [=](int64_t r0, int64_t r1, double* acc) {
        for (int64_t r = r0; r < r1; ++r) {
          const T* xr = x + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const double d = static_cast<double>(xr[c]) - sh[c];
            acc[c] += d;
            acc[C + c] += d * d;
          }
        }
      });
    }
    const double inv_m = 1.0 / static_cast<double>(M), unbias = bn_unbias_factor(M);
    for (int64_t c = 0; c < C; ++c) {
      const BnMoments mo = bn_moments_from_shifted(sums[c], sums[C + c], inv_m);
      mean[c] = shift[c] + mo.mean_minus_shift;
      const double istd = bn_invstd(mo.var, opt.eps);
      scale[c] = istd * static_cast<double>(gamma[c]);
      if (save_mean != nullptr) save_mean[c] = static_cast<T>(mean[c]);
      if (save_invstd != nullptr) save_invstd[c] = static_cast<T>(istd);
      if (running_mean != nullptr)
        running_mean[c] = static_cast<T>(
            bn_running_update(static_cast<double>(running_mean[c]), mean[c], opt.momentum));
      if (running_var != nullptr)
        running_var[c] = static_cast<T>(
            bn_running_update(static_cast<double>(running_var[c]), mo.var * unbias, opt.momentum));
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = static_cast<double>(running_mean[c]);
      const double istd = bn_invstd(static_cast<double>(running_var[c]), opt.eps);
      scale[c] = istd * static_cast<double>(gamma[c]);
      if (save_mean != nullptr) save_mean[c] = running_mean[c];
      if (save_invstd != nullptr) save_invstd[c] = static_cast<T>(istd);
    }
  }
  // Pass 2: y = act(BN(x) [+ residual]).
  // The elementwise pass runs in T (the statistics above in double), with
  // per-channel coefficients rounded to T once, as the CUDA twin computes in
  // fp32: full-width SIMD on the CPU.
  const std::vector<T> mu = to_vector<T>(mean), sc = to_vector<T>(scale);
  const T *mup = mu.data(), *scp = sc.data();
  with_flags(residual != nullptr, opt.relu, [&](auto has_residual, auto relu_on) {
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
    for (int64_t r = 0; r < M; ++r) {
      const T* xr = x + r * C;
      const T* rr = has_residual ? residual + r * C : nullptr;
      T* yr = y + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T v = bn_apply(xr[c], mup[c], scp[c], beta[c]);
        if constexpr (decltype(has_residual)::value) v += rr[c];
        yr[c] = bn_act(v, decltype(relu_on)::value);
      }
    }
  });
}

template <class T>
void fused_bn_bwd_cpu(const T* x, const T* y, const T* dy, const T* gamma, const T* mean,
                      const T* invstd, T* dx, T* dresidual, T* dgamma, T* dbeta, int64_t M,
                      int64_t C, const FusedBnOptions& opt) {
  const auto uc = static_cast<size_t>(C);
  const bool relu_on = opt.relu, training = opt.training;
  std::vector<double> istd(uc);
  for (int64_t c = 0; c < C; ++c) istd[c] = static_cast<double>(invstd[c]);
  // g at (r, c), from dy and the ReLU mask of y.
  const auto grad_at = [=](int64_t i) {
    return bn_act_grad(relu_on ? static_cast<double>(y[i]) : 0.0, static_cast<double>(dy[i]),
                       relu_on);
  };
  // Pass 1: sums[c] = sum g, sums[C + c] = sum g * (x - mean); writes dresidual.
  std::vector<double> sums(2 * uc, 0.0);
  const bool need_sums = dgamma != nullptr || dbeta != nullptr || (dx != nullptr && training);
  if (need_sums) {
    // Rows are summed in T over chunks of kChunkRows, each chunk's sums then
    // added in double, in a fixed order: full-width SIMD, deterministic.
    ThreadScratch<T> chunk(2 * C);
    with_flags(dresidual != nullptr, relu_on, [&](auto write_residual, auto relu) {
      sums = channel_sums(M, C, 2, [=, &chunk](int64_t r0, int64_t r1, double* acc) {
        T* part = chunk.mine();
        for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) {
          std::fill(part, part + 2 * C, T(0));
          for (int64_t r = c0; r < std::min(r1, c0 + kChunkRows); ++r) {
            const int64_t row = r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const int64_t i = row + c;
              // Exact in T: dy or 0.
              const T g = bn_act_grad(decltype(relu)::value ? y[i] : T(0), dy[i], decltype(relu)::value);
              if constexpr (decltype(write_residual)::value) dresidual[i] = g;
              part[c] += g;
              part[C + c] += g * (x[i] - mean[c]);
            }
          }
          for (int64_t c = 0; c < 2 * C; ++c) acc[c] += static_cast<double>(part[c]);
        }
      });
    });
  } else if (dresidual != nullptr) {
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
    for (int64_t i = 0; i < M * C; ++i) dresidual[i] = static_cast<T>(grad_at(i));
  }
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta != nullptr) dbeta[c] = static_cast<T>(sums[c]);
    if (dgamma != nullptr) dgamma[c] = static_cast<T>(sums[C + c] * istd[c]);
  }
  if (dx == nullptr) return;
  // Pass 2: dx = k1 * (g - mdy - (x - mean) * k2) (eval: mdy = k2 = 0).
  const double inv_m = 1.0 / static_cast<double>(M);
  std::vector<BnBackwardCoeffs> k(uc);
  for (int64_t c = 0; c < C; ++c)
    k[c] = bn_backward_coeffs(static_cast<double>(gamma[c]), istd[c], sums[c], sums[C + c], inv_m,
                              training);
  // The elementwise pass in T, coefficients rounded to T once (as forward).
  std::vector<T> k1(uc), mdy(uc), k2(uc);
  for (int64_t c = 0; c < C; ++c) {
    k1[c] = static_cast<T>(k[c].k1);
    mdy[c] = static_cast<T>(k[c].mdy);
    k2[c] = static_cast<T>(k[c].k2);
  }
  const T *a1 = k1.data(), *am = mdy.data(), *a2 = k2.data();
  with_flags(dresidual != nullptr, relu_on, [&](auto from_residual, auto relu) {
#pragma omp parallel for schedule(static) if (M * C >= kParallelMin)
    for (int64_t r = 0; r < M; ++r) {
      const int64_t row = r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = row + c;
        // dresidual already holds g (and may alias dy, which pass 1 overwrote).
        T g;
        if constexpr (decltype(from_residual)::value)
          g = dresidual[i];
        else
          g = bn_act_grad(decltype(relu)::value ? y[i] : T(0), dy[i], decltype(relu)::value);
        dx[i] = bn_backward_dx(a1[c], am[c], a2[c], g, x[i] - mean[c]);
      }
    }
  });
}

#define RZ_INSTANTIATE(T)                                                                       \
  template void fused_bn_fwd_cpu<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, \
                                    int64_t, int64_t, const FusedBnOptions&, const double*);    \
  template void fused_bn_bwd_cpu<T>(const T*, const T*, const T*, const T*, const T*, const T*, \
                                    T*, T*, T*, T*, int64_t, int64_t, const FusedBnOptions&);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
