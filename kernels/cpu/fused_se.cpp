// Fused SE block tail on the CPU, the twin of kernels/cuda/fused_se.cu, with
// the same passes over the [N, HW, C] tensors (elements moved per element):
//   forward:  pass 1 reads t (per-image shifted sums: BN statistics and the
//             squeeze at once); the per-channel statistics and the SE MLP are
//             O(N*C*rd); pass 2 reads t and shortcut, writes out.   3R + 1W
//   backward: pass 1 reads dout, out, t, writes dshortcut = g (per-image sums
//             of g, g*(t - mean), t - mean); the SE MLP backward and the BN
//             coefficients are O(N*C*rd); pass 2 reads g (dshortcut) and t,
//             writes dt.                                              5R + 2W
// Images are independent in both passes, so the parallel loops run over n and
// every sum keeps its fixed order (hw within an image, then n).
#include "kernels/cpu/fused_se.h"

#include <algorithm>
#include <vector>

#include "kernels/common/activation_math.h"
#include "kernels/common/bn_math.h"
#include "kernels/common/se_math.h"
#include "kernels/cpu/thread_scratch.h"

namespace rz {

namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kChunkRows = 16;

}  // namespace

template <class T>
void fused_se_fwd_cpu(const T* t, const T* shortcut, const SeWeights<T>& w, T* out,
                      const SeSaved<T>& saved, T* running_mean, T* running_var, const SeDims& d,
                      const FusedSeOptions& opt, const double* given_sums) {
  const int64_t N = d.N, HW = d.HW, C = d.C, rd = d.rd;
  const auto uc = static_cast<size_t>(C), unc = static_cast<size_t>(N * C);
  const double inv_hw = 1.0 / static_cast<double>(HW);

  // Pass 1: per-image shifted sums nc[(k*N + n)*C + c], k = 0: sum(t - shift),
  // k = 1: sum((t - shift)^2); shift = t[0, 0, c].
  // given_sums: the raw sums (shift 0) from t's producer.
  std::vector<double> shift(uc, 0.0), nc(2 * unc, 0.0);
  if (given_sums != nullptr) {
    nc.assign(given_sums, given_sums + 2 * unc);
  } else {
    for (int64_t c = 0; c < C; ++c) shift[c] = static_cast<double>(t[c]);
    // Rows are summed in T over chunks of kChunkRows, each chunk's sums then
    // added in double, in a fixed order. Eval needs only the squeeze (k = 0).
    const T* sh = t;  // shift[c] = t[c] exactly
    const bool squares = opt.training;
    ThreadScratch<double> scratch(2 * C);
    ThreadScratch<T> chunk(2 * C);
#pragma omp parallel for schedule(static) if (N * HW * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      double* acc = scratch.zeroed();
      T* part = chunk.mine();
      for (int64_t h0 = 0; h0 < HW; h0 += kChunkRows) {
        const int64_t h1 = std::min(HW, h0 + kChunkRows);
        std::fill(part, part + 2 * C, T(0));
        for (int64_t hw = h0; hw < h1; ++hw) {
          const T* tr = t + nlc_index(n, hw, 0, HW, C);
          if (squares) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const T v = tr[c] - sh[c];
              part[c] += v;
              part[C + c] += v * v;
            }
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) part[c] += tr[c] - sh[c];
          }
        }
        for (int64_t i = 0; i < 2 * C; ++i) acc[i] += static_cast<double>(part[i]);
      }
      for (int64_t c = 0; c < C; ++c) {
        nc[seg_sum_index(0, n, c, N, C)] = acc[c];
        nc[seg_sum_index(1, n, c, N, C)] = acc[C + c];
      }
    }
  }

  // BN statistics per channel (sums over n in order).
  std::vector<double> mean(uc), scale(uc), mean_minus_shift(uc);
  const int64_t M = N * HW;
  for (int64_t c = 0; c < C; ++c) {
    double istd;
    if (opt.training) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        s1 += nc[seg_sum_index(0, n, c, N, C)];
        s2 += nc[seg_sum_index(1, n, c, N, C)];
      }
      const BnMoments mo = bn_moments_from_shifted(s1, s2, 1.0 / static_cast<double>(M));
      mean_minus_shift[c] = mo.mean_minus_shift;
      mean[c] = shift[c] + mo.mean_minus_shift;
      istd = bn_invstd(mo.var, opt.eps);
      if (running_mean != nullptr)
        running_mean[c] = static_cast<T>(
            bn_running_update(static_cast<double>(running_mean[c]), mean[c], opt.momentum));
      if (running_var != nullptr)
        running_var[c] = static_cast<T>(bn_running_update(
            static_cast<double>(running_var[c]), mo.var * bn_unbias_factor(M), opt.momentum));
    } else {
      mean[c] = static_cast<double>(running_mean[c]);
      mean_minus_shift[c] = mean[c] - shift[c];
      istd = bn_invstd(static_cast<double>(running_var[c]), opt.eps);
    }
    scale[c] = istd * static_cast<double>(w.gamma[c]);
    if (saved.mean != nullptr) saved.mean[c] = static_cast<T>(mean[c]);
    if (saved.invstd != nullptr) saved.invstd[c] = static_cast<T>(istd);
  }

  // SE excitation per image: squeeze, fc1 + ReLU, fc2 + sigmoid.
  std::vector<double> gate(unc);
  ThreadScratch<double> scratch(C + rd);
#pragma omp parallel for schedule(static) if (N * C * rd >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    double* const p = scratch.mine();
    double* const z = p + C;
    for (int64_t c = 0; c < C; ++c) {
      p[c] = se_pooled(nc[seg_sum_index(0, n, c, N, C)], inv_hw, mean_minus_shift[c], scale[c],
                       static_cast<double>(w.beta[c]));
      if (saved.pooled != nullptr) saved.pooled[n * C + c] = static_cast<T>(p[c]);
    }
    for (int64_t j = 0; j < rd; ++j) {
      double a = static_cast<double>(w.b1[j]);
      for (int64_t c = 0; c < C; ++c) a += static_cast<double>(w.w1[j * C + c]) * p[c];
      z[j] = relu(a);
      if (saved.hidden != nullptr) saved.hidden[n * rd + j] = static_cast<T>(z[j]);
    }
    for (int64_t c = 0; c < C; ++c) {
      double a = static_cast<double>(w.b2[c]);
      for (int64_t j = 0; j < rd; ++j) a += static_cast<double>(w.w2[c * rd + j]) * z[j];
      gate[n * C + c] = sigmoid(a);
      if (saved.gate != nullptr) saved.gate[n * C + c] = static_cast<T>(gate[n * C + c]);
    }
  }

  // Pass 2: out = relu(BN(t) * gate + shortcut).
  // The elementwise pass runs in T (statistics and the MLP above in double),
  // with per-channel and per-image coefficients rounded to T once, as the
  // CUDA twin computes in fp32: full-width SIMD on the CPU.
  const std::vector<T> mu(mean.begin(), mean.end()), sc(scale.begin(), scale.end()),
      gt(gate.begin(), gate.end());
#pragma omp parallel for schedule(static) if (N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T *gn = gt.data() + n * C, *mup = mu.data(), *scp = sc.data();
    for (int64_t hw = 0; hw < HW; ++hw) {
      const int64_t row = nlc_index(n, hw, 0, HW, C);
      const T *tr = t + row, *sr = shortcut + row;
      T* outr = out + row;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        outr[c] = se_tail_out(bn_apply(tr[c], mup[c], scp[c], w.beta[c]), gn[c], sr[c]);
    }
  }
}

template <class T>
void fused_se_bwd_cpu(const T* t, const T* out, const T* dout, const SeWeights<T>& w,
                      const SeSaved<const T>& saved, T* dt, T* dshortcut, const SeGrads<T>& grads,
                      const SeDims& d, const FusedSeOptions& opt) {
  const int64_t N = d.N, HW = d.HW, C = d.C, rd = d.rd;
  const auto uc = static_cast<size_t>(C), unc = static_cast<size_t>(N * C);
  const double inv_hw = 1.0 / static_cast<double>(HW);
  std::vector<double> istd(uc), scale(uc);
  for (int64_t c = 0; c < C; ++c) {
    istd[c] = static_cast<double>(saved.invstd[c]);
    scale[c] = static_cast<double>(w.gamma[c]) * istd[c];
  }

  // Pass 1: g = dout * [out > 0] -> dshortcut; per-image sums
  // nc[(k*N + n)*C + c]: k = 0: sum g, 1: sum g (t - mean), 2: sum (t - mean).
  std::vector<double> nc(3 * unc, 0.0);
  {
    // Rows are summed in T over chunks of kChunkRows, each chunk's sums then
    // added in double, in a fixed order: full-width SIMD, deterministic.
    const T* mup = saved.mean;
    ThreadScratch<double> scratch(3 * C);
    ThreadScratch<T> chunk(3 * C);
#pragma omp parallel for schedule(static) if (N * HW * C >= kParallelMin)
    for (int64_t n = 0; n < N; ++n) {
      double* acc = scratch.zeroed();
      T* part = chunk.mine();
      for (int64_t h0 = 0; h0 < HW; h0 += kChunkRows) {
        const int64_t h1 = std::min(HW, h0 + kChunkRows);
        std::fill(part, part + 3 * C, T(0));
        for (int64_t hw = h0; hw < h1; ++hw) {
          const int64_t row = nlc_index(n, hw, 0, HW, C);
          const T *outr = out + row, *doutr = dout + row, *tr = t + row;
          T* dsr = dshortcut + row;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const T g = relu_grad_from_output(outr[c], doutr[c]);  // exact: dout or 0
            dsr[c] = g;
            const T xc = tr[c] - mup[c];
            part[c] += g;
            part[C + c] += g * xc;
            part[2 * C + c] += xc;
          }
        }
        for (int64_t i = 0; i < 3 * C; ++i) acc[i] += static_cast<double>(part[i]);
      }
      for (int64_t k = 0; k < 3; ++k)
        for (int64_t c = 0; c < C; ++c) nc[seg_sum_index(k, n, c, N, C)] = acc[k * C + c];
    }
  }

  // SE MLP backward per image: ds -> dzs (through the sigmoid) -> dz -> dh
  // (through the ReLU) -> dp.
  std::vector<double> dzs(unc), dh(static_cast<size_t>(N * rd)), dp(unc);
#pragma omp parallel for schedule(static) if (N * C * rd >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const double ds =
          se_gate_grad(scale[c], static_cast<double>(w.beta[c]), nc[seg_sum_index(0, n, c, N, C)],
                       nc[seg_sum_index(1, n, c, N, C)]);
      dzs[n * C + c] = sigmoid_grad_from_output(static_cast<double>(saved.gate[n * C + c]), ds);
    }
    for (int64_t j = 0; j < rd; ++j) {
      double a = 0.0;
      for (int64_t c = 0; c < C; ++c) a += dzs[n * C + c] * static_cast<double>(w.w2[c * rd + j]);
      dh[n * rd + j] = relu_grad_from_output(static_cast<double>(saved.hidden[n * rd + j]), a);
    }
    for (int64_t c = 0; c < C; ++c) {
      double a = 0.0;
      for (int64_t j = 0; j < rd; ++j) a += dh[n * rd + j] * static_cast<double>(w.w1[j * C + c]);
      dp[n * C + c] = a;
    }
  }

  // SE parameter gradients (sums over n in order).
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = 0; j < rd; ++j) {
      double a2 = 0.0, a1 = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        a2 += dzs[n * C + c] * static_cast<double>(saved.hidden[n * rd + j]);
        a1 += dh[n * rd + j] * static_cast<double>(saved.pooled[n * C + c]);
      }
      if (grads.dw2 != nullptr) grads.dw2[c * rd + j] = static_cast<T>(a2);
      if (grads.dw1 != nullptr) grads.dw1[j * C + c] = static_cast<T>(a1);
    }
  }
  if (grads.db2 != nullptr)
    for (int64_t c = 0; c < C; ++c) {
      double a = 0.0;
      for (int64_t n = 0; n < N; ++n) a += dzs[n * C + c];
      grads.db2[c] = static_cast<T>(a);
    }
  if (grads.db1 != nullptr)
    for (int64_t j = 0; j < rd; ++j) {
      double a = 0.0;
      for (int64_t n = 0; n < N; ++n) a += dh[n * rd + j];
      grads.db1[j] = static_cast<T>(a);
    }

  // BN backward coefficients from the sums of du = g * gate + dp / HW.
  const double inv_m = 1.0 / static_cast<double>(N * HW);
  std::vector<BnBackwardCoeffs> k(uc);
  for (int64_t c = 0; c < C; ++c) {
    double sum_du = 0.0, sum_du_xc = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const BnDySums s =
          se_du_image_sums(static_cast<double>(saved.gate[n * C + c]), dp[n * C + c], inv_hw,
                           nc[seg_sum_index(0, n, c, N, C)], nc[seg_sum_index(1, n, c, N, C)],
                           nc[seg_sum_index(2, n, c, N, C)]);
      sum_du += s.sum_dy;
      sum_du_xc += s.sum_dy_xc;
    }
    if (grads.dbeta != nullptr) grads.dbeta[c] = static_cast<T>(sum_du);
    if (grads.dgamma != nullptr) grads.dgamma[c] = static_cast<T>(sum_du_xc * istd[c]);
    k[c] = bn_backward_coeffs(static_cast<double>(w.gamma[c]), istd[c], sum_du, sum_du_xc, inv_m,
                              opt.training);
  }

  // Pass 2: dt = k1 * (du - mdy - (t - mean) * k2) with du rebuilt from g.
  // The elementwise pass in T, coefficients rounded to T once (as forward).
  std::vector<T> k1(uc), mdy(uc), k2(uc), dp_hw(unc);
  for (int64_t c = 0; c < C; ++c) {
    k1[c] = static_cast<T>(k[c].k1);
    mdy[c] = static_cast<T>(k[c].mdy);
    k2[c] = static_cast<T>(k[c].k2);
  }
  for (int64_t i = 0; i < N * C; ++i) dp_hw[i] = static_cast<T>(dp[i] * inv_hw);
#pragma omp parallel for schedule(static) if (N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T *gn = saved.gate + n * C, *dpn = dp_hw.data() + n * C;
    const T *a1 = k1.data(), *am = mdy.data(), *a2 = k2.data(), *mup = saved.mean;
    for (int64_t hw = 0; hw < HW; ++hw) {
      const int64_t row = nlc_index(n, hw, 0, HW, C);
      const T *gr = dshortcut + row, *tr = t + row;
      T* dtr = dt + row;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        dtr[c] = bn_backward_dx(a1[c], am[c], a2[c], se_du(gr[c], gn[c], dpn[c]), tr[c] - mup[c]);
    }
  }
}

#define RZ_INSTANTIATE(T)                                                               \
  template void fused_se_fwd_cpu<T>(const T*, const T*, const SeWeights<T>&, T*,        \
                                    const SeSaved<T>&, T*, T*, const SeDims&,           \
                                    const FusedSeOptions&, const double*);              \
  template void fused_se_bwd_cpu<T>(const T*, const T*, const T*, const SeWeights<T>&,  \
                                    const SeSaved<const T>&, T*, T*, const SeGrads<T>&, \
                                    const SeDims&, const FusedSeOptions&);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
