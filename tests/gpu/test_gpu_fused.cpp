// CUDA fused BN (+ residual)(+ ReLU) and fused SE block tail against their CPU
// twins (kernels/cpu/fused_bn.h, fused_se.h), on odd shapes: N = 1..3, HW in
// {1, 5x5, 7x7, 16x16, 33x33}, C in {64, 67, 256}, rd = max(8, int(C/16 + 4)
// // 8 * 8), plus row counts that need many chunks (HW = 128x128; M past the
// 1024-chunk cap), training and eval, with 0xA5 sentinel guards around every
// device buffer (tests/gpu/gpu_guard.h).
// fp32: |gpu - cpu| <= 1e-4 * (|cpu| + mag), mag being the sum of |terms| that
// make up the value (computed here by naive loops in double; propagated
// through the SE MLP for the backward). bf16: the CPU twin runs in fp32 on the
// bf16-rounded inputs; bf16 tensors must be within a normalized MSE of 1e-4,
// the fp32 vectors (statistics, SE activations, parameter gradients) within
// the fp32 bound. The ReLU-masked gradient g (dshortcut, dresidual) is exact.
#include "tests/gpu/gpu_test.h"

#if defined(RZ_HAVE_CUDA)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/fused_bn.h"
#include "kernels/cpu/fused_se.h"
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/fused_bn.cuh"
#include "kernels/cuda/fused_se.cuh"
#include "tests/gpu/gpu_guard.h"
#include "tests/gpu/gpu_vec.h"
#endif

using namespace rz;

#if defined(RZ_HAVE_CUDA)
namespace {

using gpu_test::random_vec;
using gpu_test::rounded;
using gpu_test::to_bf16;
using gpu_test::to_f32;

using gpu_test::Guarded;
using Vec = std::vector<float>;
using DVec = std::vector<double>;

constexpr double kRtol = 1e-4;
constexpr double kNmse = 1e-4;
constexpr double kMomentum = 0.1, kEps = 1e-5;

cudaStream_t stream() {
  return cudaStreamPerThread;
}

Vec to_vec(const DVec& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

// |got - ref| <= rtol * (|ref| + mag) elementwise (mag empty: 0).
void expect_close(const char* what, const Vec& got, const Vec& ref, const Vec& mag = {}) {
  INFO("output: ", what);
  REQUIRE(got.size() == ref.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double m = mag.empty() ? 0.0 : static_cast<double>(mag[i]);
    const double g = got[i], r = ref[i];
    if (!(std::fabs(g - r) <= kRtol * (std::fabs(r) + m))) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  }
  if (bad > 0) {
    const auto f = static_cast<size_t>(first);
    INFO(bad, " mismatches; first at ", first, ": gpu ", got[f], " cpu ", ref[f], " mag ",
         mag.empty() ? 0.0f : mag[f]);
    CHECK(bad == 0);
  } else {
    CHECK(bad == 0);
  }
}

void expect_nmse(const char* what, const Vec& got, const Vec& ref) {
  INFO("output: ", what);
  REQUIRE(got.size() == ref.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  const double e = den > 0.0 ? num / den : num;
  INFO("nmse ", e);
  CHECK(e <= kNmse);
}

int64_t se_rd(int64_t C) {
  return std::max<int64_t>(8, static_cast<int64_t>(static_cast<double>(C) / 16.0 + 4.0) / 8 * 8);
}

// ------------------------------------------------------------- magnitudes

// BN statistics terms: mag_mean[c] = mean |x| + |shift| (the sums run over
// x - shift, shift = x[0, c]).
Vec mean_magnitude(const Vec& x, int64_t M, int64_t C) {
  DVec s(static_cast<size_t>(C), 0.0);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) s[c] += std::fabs(static_cast<double>(x[r * C + c]));
  Vec out(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c)
    out[c] = static_cast<float>(s[c] / static_cast<double>(M) + std::fabs(x[c]));
  return out;
}

struct BnMags {
  Vec y, mean, dx, dgamma, dbeta;
};

// Terms of the fused BN outputs, from the CPU statistics.
BnMags bn_magnitudes(const Vec& x, const Vec& res, const Vec& g, const Vec& gamma, const Vec& beta,
                     const Vec& mean, const Vec& invstd, int64_t M, int64_t C, bool training) {
  BnMags m;
  m.mean = mean_magnitude(x, M, C);
  const auto n = static_cast<size_t>(M * C), uc = static_cast<size_t>(C);
  m.y.resize(n);
  m.dx.resize(n);
  DVec sg(uc, 0.0), sgx(uc, 0.0);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(r * C + c);
      const double scale = std::fabs(static_cast<double>(gamma[c]) * invstd[c]);
      const double xc = std::fabs(static_cast<double>(x[i]) - mean[c]);
      m.y[i] = static_cast<float>((xc + m.mean[c]) * scale + std::fabs(beta[c]) +
                                  (res.empty() ? 0.0 : std::fabs(res[i])));
      sg[c] += std::fabs(g[i]);
      sgx[c] += std::fabs(g[i]) * xc * invstd[c];
    }
  m.dgamma = to_vec(sgx);
  m.dbeta = to_vec(sg);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(r * C + c);
      const double k1 = std::fabs(static_cast<double>(gamma[c]) * invstd[c]);
      const double xh = std::fabs(static_cast<double>(x[i]) - mean[c]) * invstd[c];
      const double stat = training ? (sg[c] + xh * sgx[c]) / static_cast<double>(M) : 0.0;
      m.dx[i] = static_cast<float>(k1 * (std::fabs(g[i]) + stat));
    }
  return m;
}

struct SeProblem {
  SeDims d;
  Vec t, sc, gamma, beta, w1, b1, w2, b2, rm, rv, dout;
};

SeProblem make_se_problem(int64_t N, int64_t HW, int64_t C, Generator& gen) {
  const int64_t rd = se_rd(C);
  const double b1w = 1.0 / std::sqrt(static_cast<double>(C)),
               b2w = 1.0 / std::sqrt(static_cast<double>(rd));
  SeProblem p{{N, HW, C, rd}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  p.t = random_vec(N * HW * C, -1, 3, gen);
  p.sc = random_vec(N * HW * C, -1, 1, gen);
  p.gamma = random_vec(C, 0.5, 1.5, gen);
  p.beta = random_vec(C, -0.5, 0.5, gen);
  p.w1 = random_vec(rd * C, -2 * b1w, 2 * b1w, gen);
  p.b1 = random_vec(rd, -b1w, b1w, gen);
  p.w2 = random_vec(C * rd, -2 * b2w, 2 * b2w, gen);
  p.b2 = random_vec(C, -b2w, b2w, gen);
  p.rm = random_vec(C, -0.2, 0.2, gen);
  p.rv = random_vec(C, 0.5, 2, gen);
  p.dout = random_vec(N * HW * C, -1, 1, gen);
  return p;
}

// The CPU twin's forward results (fp32).
struct SeFwd {
  Vec out, mean, invstd, pooled, hidden, gate, rm, rv;
};

SeFwd se_cpu_forward(const SeProblem& p, const Vec& t, const Vec& sc, bool training) {
  const SeDims& d = p.d;
  SeFwd f{Vec(t.size()),
          Vec(static_cast<size_t>(d.C)),
          Vec(static_cast<size_t>(d.C)),
          Vec(static_cast<size_t>(d.N * d.C)),
          Vec(static_cast<size_t>(d.N * d.rd)),
          Vec(static_cast<size_t>(d.N * d.C)),
          p.rm,
          p.rv};
  const SeWeights<float> w{p.gamma.data(), p.beta.data(), p.w1.data(),
                           p.b1.data(),    p.w2.data(),   p.b2.data()};
  fused_se_fwd_cpu(t.data(), sc.data(), w, f.out.data(),
                   SeSaved<float>{f.mean.data(), f.invstd.data(), f.pooled.data(), f.hidden.data(),
                                  f.gate.data()},
                   f.rm.data(), f.rv.data(), d, FusedSeOptions{training, kMomentum, kEps});
  return f;
}

struct SeBwd {
  Vec dt, dsc, dgamma, dbeta, dw1, db1, dw2, db2;
};

SeBwd se_cpu_backward(const SeProblem& p, const Vec& t, const Vec& out, const Vec& dout,
                      const SeFwd& f, bool training) {
  const SeDims& d = p.d;
  SeBwd b{Vec(t.size()),
          Vec(t.size()),
          Vec(static_cast<size_t>(d.C)),
          Vec(static_cast<size_t>(d.C)),
          Vec(static_cast<size_t>(d.rd * d.C)),
          Vec(static_cast<size_t>(d.rd)),
          Vec(static_cast<size_t>(d.C * d.rd)),
          Vec(static_cast<size_t>(d.C))};
  const SeWeights<float> w{p.gamma.data(), p.beta.data(), p.w1.data(),
                           p.b1.data(),    p.w2.data(),   p.b2.data()};
  fused_se_bwd_cpu(t.data(), out.data(), dout.data(), w,
                   SeSaved<const float>{f.mean.data(), f.invstd.data(), f.pooled.data(),
                                        f.hidden.data(), f.gate.data()},
                   b.dt.data(), b.dsc.data(),
                   SeGrads<float>{b.dgamma.data(), b.dbeta.data(), b.dw1.data(), b.db1.data(),
                                  b.dw2.data(), b.db2.data()},
                   d, FusedSeOptions{training, kMomentum, kEps});
  return b;
}

struct SeMags {
  Vec out, mean, pooled, hidden, gate;
  Vec dt, dgamma, dbeta, dw1, db1, dw2, db2;
};

// Sums of |terms|, forward and backward, from the CPU forward's values: the
// backward's are propagated in absolute value through the SE MLP and BN
// (|ds| <= sum |g u|, |dzs| <= s(1-s) |ds|, ...).
SeMags se_magnitudes(const SeProblem& p, const Vec& t, const Vec& sc, const Vec& out,
                     const Vec& dout, const SeFwd& f, bool training) {
  const int64_t N = p.d.N, HW = p.d.HW, C = p.d.C, rd = p.d.rd, M = N * HW;
  const auto uc = static_cast<size_t>(C), unc = static_cast<size_t>(N * C),
             unr = static_cast<size_t>(N * rd), un = static_cast<size_t>(M * C);
  SeMags m;
  m.mean = mean_magnitude(t, M, C);
  DVec scale(uc);
  for (size_t c = 0; c < uc; ++c)
    scale[c] = std::fabs(static_cast<double>(p.gamma[c]) * f.invstd[c]);
  DVec pooled(unc, 0.0), ds(unc, 0.0);
  m.out.resize(un);
  DVec g(un);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t hw = 0; hw < HW; ++hw)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>((n * HW + hw) * C + c),
                     nc = static_cast<size_t>(n * C + c);
        const double xc = std::fabs(static_cast<double>(t[i]) - f.mean[c]);
        const double u = xc * scale[c] + std::fabs(p.beta[c]);
        m.out[i] = static_cast<float>(
            ((xc + m.mean[c]) * scale[c] + std::fabs(p.beta[c])) * f.gate[nc] + std::fabs(sc[i]));
        pooled[nc] += (std::fabs(static_cast<double>(t[i]) - t[c]) / static_cast<double>(HW));
        g[i] = out[i] > 0.0f ? std::fabs(dout[i]) : 0.0;
        ds[nc] += g[i] * u;
      }
  m.pooled.resize(unc);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const size_t nc = static_cast<size_t>(n * C + c);
      m.pooled[nc] = static_cast<float>(
          (pooled[nc] + std::fabs(static_cast<double>(f.mean[c]) - t[c])) * scale[c] +
          std::fabs(p.beta[c]));
    }
  m.hidden.resize(unr);
  m.gate.resize(unc);
  DVec dzs(unc), dh(unr), dp(unc, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < rd; ++j) {
      double a = std::fabs(p.b1[j]);
      for (int64_t c = 0; c < C; ++c) a += std::fabs(p.w1[j * C + c] * f.pooled[n * C + c]);
      m.hidden[n * rd + j] = static_cast<float>(a);
    }
    for (int64_t c = 0; c < C; ++c) {
      double a = std::fabs(p.b2[c]);
      for (int64_t j = 0; j < rd; ++j) a += std::fabs(p.w2[c * rd + j] * f.hidden[n * rd + j]);
      m.gate[n * C + c] = static_cast<float>(a);
      const double s = f.gate[n * C + c];
      dzs[n * C + c] = s * (1.0 - s) * ds[n * C + c];
    }
    for (int64_t j = 0; j < rd; ++j) {
      double a = 0.0;
      for (int64_t c = 0; c < C; ++c) a += dzs[n * C + c] * std::fabs(p.w2[c * rd + j]);
      dh[n * rd + j] = f.hidden[n * rd + j] > 0.0f ? a : 0.0;
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < rd; ++j) dp[n * C + c] += dh[n * rd + j] * std::fabs(p.w1[j * C + c]);
  }
  DVec sdu(uc, 0.0), sdux(uc, 0.0), du(un);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t hw = 0; hw < HW; ++hw)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>((n * HW + hw) * C + c),
                     nc = static_cast<size_t>(n * C + c);
        du[i] = g[i] * f.gate[nc] + dp[nc] / static_cast<double>(HW);
        sdu[c] += du[i];
        sdux[c] += du[i] * std::fabs(static_cast<double>(t[i]) - f.mean[c]) * f.invstd[c];
      }
  m.dbeta = to_vec(sdu);
  m.dgamma = to_vec(sdux);
  m.dt.resize(un);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(r * C + c);
      const double xh = std::fabs(static_cast<double>(t[i]) - f.mean[c]) * f.invstd[c];
      const double stat = training ? (sdu[c] + xh * sdux[c]) / static_cast<double>(M) : 0.0;
      m.dt[i] = static_cast<float>(scale[c] * (du[i] + stat));
    }
  m.dw2.resize(static_cast<size_t>(C * rd));
  m.dw1.resize(static_cast<size_t>(rd * C));
  m.db2.resize(uc);
  m.db1.resize(static_cast<size_t>(rd));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < rd; ++j) {
      double a2 = 0.0, a1 = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        a2 += dzs[n * C + c] * std::fabs(f.hidden[n * rd + j]);
        a1 += dh[n * rd + j] * std::fabs(f.pooled[n * C + c]);
      }
      m.dw2[c * rd + j] = static_cast<float>(a2);
      m.dw1[j * C + c] = static_cast<float>(a1);
    }
  for (int64_t c = 0; c < C; ++c) {
    double a = 0.0;
    for (int64_t n = 0; n < N; ++n) a += dzs[n * C + c];
    m.db2[c] = static_cast<float>(a);
  }
  for (int64_t j = 0; j < rd; ++j) {
    double a = 0.0;
    for (int64_t n = 0; n < N; ++n) a += dh[n * rd + j];
    m.db1[j] = static_cast<float>(a);
  }
  return m;
}

// Device copies of the SE parameters (fp32).
struct SeDeviceWeights {
  Guarded<float> gamma, beta, w1, b1, w2, b2;
  explicit SeDeviceWeights(const SeProblem& p)
      : gamma(p.gamma), beta(p.beta), w1(p.w1), b1(p.b1), w2(p.w2), b2(p.b2) {}
  SeWeights<float> ptrs() {
    return {gamma.get(), beta.get(), w1.get(), b1.get(), w2.get(), b2.get()};
  }
};

struct SeDeviceSaved {
  Guarded<float> mean, invstd, pooled, hidden, gate;
  explicit SeDeviceSaved(const SeDims& d)
      : mean(d.C), invstd(d.C), pooled(d.N * d.C), hidden(d.N * d.rd), gate(d.N * d.C) {}
  explicit SeDeviceSaved(const SeFwd& f)
      : mean(f.mean), invstd(f.invstd), pooled(f.pooled), hidden(f.hidden), gate(f.gate) {}
  SeSaved<float> ptrs() {
    return {mean.get(), invstd.get(), pooled.get(), hidden.get(), gate.get()};
  }
};

struct SeDeviceGrads {
  Guarded<float> dgamma, dbeta, dw1, db1, dw2, db2;
  explicit SeDeviceGrads(const SeDims& d)
      : dgamma(d.C), dbeta(d.C), dw1(d.rd * d.C), db1(d.rd), dw2(d.C * d.rd), db2(d.C) {}
  SeGrads<float> ptrs() {
    return {dgamma.get(), dbeta.get(), dw1.get(), db1.get(), dw2.get(), db2.get()};
  }
};

void expect_se_forward(const SeFwd& ref, const SeMags& m, SeDeviceSaved& got, Guarded<float>& rm,
                       Guarded<float>& rv) {
  expect_close("mean", got.mean.read(), ref.mean, m.mean);
  expect_close("invstd", got.invstd.read(), ref.invstd);
  expect_close("pooled", got.pooled.read(), ref.pooled, m.pooled);
  expect_close("hidden", got.hidden.read(), ref.hidden, m.hidden);
  expect_close("gate", got.gate.read(), ref.gate, m.gate);
  expect_close("running_mean", rm.read(), ref.rm, m.mean);
  expect_close("running_var", rv.read(), ref.rv);
}

void expect_se_param_grads(const SeBwd& ref, const SeMags& m, SeDeviceGrads& got) {
  expect_close("dgamma", got.dgamma.read(), ref.dgamma, m.dgamma);
  expect_close("dbeta", got.dbeta.read(), ref.dbeta, m.dbeta);
  expect_close("dw1", got.dw1.read(), ref.dw1, m.dw1);
  expect_close("db1", got.db1.read(), ref.db1, m.db1);
  expect_close("dw2", got.dw2.read(), ref.dw2, m.dw2);
  expect_close("db2", got.db2.read(), ref.db2, m.db2);
}

void run_se_case(const SeProblem& p, bool training) {
  const SeDims& d = p.d;
  const int64_t n = d.N * d.HW * d.C;
  const FusedSeOptions opt{training, kMomentum, kEps};
  SeDeviceWeights w(p);

  // ---- fp32 ----
  {
    const SeFwd ref = se_cpu_forward(p, p.t, p.sc, training);
    const SeBwd bref = se_cpu_backward(p, p.t, ref.out, p.dout, ref, training);
    const SeMags m = se_magnitudes(p, p.t, p.sc, ref.out, p.dout, ref, training);
    Guarded<float> t(p.t), sc(p.sc), out(n), rm(p.rm), rv(p.rv);
    SeDeviceSaved saved(d);
    RZ_CUDA_CHECK(fused_se_fwd_cuda(t.get(), sc.get(), w.ptrs(), out.get(), saved.ptrs(), rm.get(),
                                    rv.get(), d, opt, nullptr, stream()));
    expect_close("out", out.read(), ref.out, m.out);
    expect_se_forward(ref, m, saved, rm, rv);
    // The same from the producer's raw per-image sums (conv epilogue).
    {
      std::vector<double> sums(static_cast<size_t>(2 * d.N * d.C), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t img = i / (d.HW * d.C), c = i % d.C;
        const double v = p.t[static_cast<size_t>(i)];
        sums[static_cast<size_t>(img * d.C + c)] += v;
        sums[static_cast<size_t>((d.N + img) * d.C + c)] += v * v;
      }
      Guarded<double> gsums(sums);
      Guarded<float> out3(n), rm3(p.rm), rv3(p.rv);
      SeDeviceSaved saved3(d);
      RZ_CUDA_CHECK(fused_se_fwd_cuda(t.get(), sc.get(), w.ptrs(), out3.get(), saved3.ptrs(),
                                      rm3.get(), rv3.get(), d, opt, gsums.get(), stream()));
      expect_close("out from image sums", out3.read(), ref.out, m.out);
      expect_se_forward(ref, m, saved3, rm3, rv3);
    }
    // No saved outputs, no running update (training) / running read (eval).
    Guarded<float> out2(n), rm2(p.rm), rv2(p.rv);
    RZ_CUDA_CHECK(fused_se_fwd_cuda(t.get(), sc.get(), w.ptrs(), out2.get(),
                                    SeSaved<float>{nullptr, nullptr, nullptr, nullptr, nullptr},
                                    training ? nullptr : rm2.get(), training ? nullptr : rv2.get(),
                                    d, opt, nullptr, stream()));
    expect_close("out without saved", out2.read(), ref.out, m.out);
    CHECK(rm2.read() == p.rm);

    // Backward from the CPU's forward (same ReLU masks).
    Guarded<float> cout(ref.out), dout(p.dout), dt(n), dsc(n);
    SeDeviceSaved csaved(ref);
    SeDeviceGrads grads(d);
    RZ_CUDA_CHECK(fused_se_bwd_cuda(t.get(), cout.get(), dout.get(), w.ptrs(),
                                    csaved.ptrs().as_input(), dt.get(), dsc.get(), grads.ptrs(), d,
                                    opt, stream()));
    expect_close("dt", dt.read(), bref.dt, m.dt);
    CHECK(dsc.read() == bref.dsc);
    expect_se_param_grads(bref, m, grads);
    // dshortcut in place over dout; no parameter gradients.
    Guarded<float> inplace(p.dout), dt2(n);
    RZ_CUDA_CHECK(fused_se_bwd_cuda(t.get(), cout.get(), inplace.get(), w.ptrs(),
                                    csaved.ptrs().as_input(), dt2.get(), inplace.get(),
                                    SeGrads<float>{}, d, opt, stream()));
    expect_close("dt, dshortcut in place", dt2.read(), bref.dt, m.dt);
    CHECK(inplace.read() == bref.dsc);
  }

  // ---- bf16 activations, fp32 parameters and statistics ----
  {
    const Vec tr = rounded(p.t), scr = rounded(p.sc), doutr = rounded(p.dout);
    const SeFwd ref = se_cpu_forward(p, tr, scr, training);
    const Vec outr = rounded(ref.out);  // the mask the backward sees
    const SeBwd bref = se_cpu_backward(p, tr, outr, doutr, ref, training);
    const SeMags m = se_magnitudes(p, tr, scr, outr, doutr, ref, training);
    Guarded<bf16> t(to_bf16(p.t)), sc(to_bf16(p.sc)), out(n);
    Guarded<float> rm(p.rm), rv(p.rv);
    SeDeviceSaved saved(d);
    RZ_CUDA_CHECK(fused_se_fwd_cuda(t.get(), sc.get(), w.ptrs(), out.get(), saved.ptrs(), rm.get(),
                                    rv.get(), d, opt, nullptr, stream()));
    expect_nmse("out (bf16)", to_f32(out.read()), ref.out);
    expect_se_forward(ref, m, saved, rm, rv);

    Guarded<bf16> cout(to_bf16(outr)), dout(to_bf16(p.dout)), dt(n), dsc(n);
    SeDeviceSaved csaved(ref);
    SeDeviceGrads grads(d);
    RZ_CUDA_CHECK(fused_se_bwd_cuda(t.get(), cout.get(), dout.get(), w.ptrs(),
                                    csaved.ptrs().as_input(), dt.get(), dsc.get(), grads.ptrs(), d,
                                    opt, stream()));
    expect_nmse("dt (bf16)", to_f32(dt.read()), bref.dt);
    CHECK(to_f32(dsc.read()) == bref.dsc);
    expect_se_param_grads(bref, m, grads);
  }
}

void run_bn_case(int64_t M, int64_t C, bool training, bool relu_on, bool residual, Generator& gen) {
  CAPTURE(training);
  CAPTURE(relu_on);
  CAPTURE(residual);
  const int64_t n = M * C;
  const auto un = static_cast<size_t>(n), uc = static_cast<size_t>(C);
  const Vec x = random_vec(n, -1, 3, gen), res = random_vec(n, -1, 1, gen),
            dy = random_vec(n, -1, 1, gen);
  const Vec gamma = random_vec(C, 0.5, 1.5, gen), beta = random_vec(C, -0.5, 0.5, gen);
  const Vec rm0 = random_vec(C, -0.2, 0.2, gen), rv0 = random_vec(C, 0.5, 2, gen);
  const FusedBnOptions opt{training, relu_on, kMomentum, kEps};
  Guarded<float> gg(gamma), gb(beta);

  for (const bool bf : {false, true}) {
    CAPTURE(bf);
    const Vec xs = bf ? rounded(x) : x, rs = bf ? rounded(res) : res, dys = bf ? rounded(dy) : dy;
    Vec y(un), mean(uc), invstd(uc), rm = rm0, rv = rv0;
    fused_bn_fwd_cpu(xs.data(), residual ? rs.data() : nullptr, gamma.data(), beta.data(), y.data(),
                     mean.data(), invstd.data(), rm.data(), rv.data(), M, C, opt);
    const Vec ys = bf ? rounded(y) : y;  // the mask the backward sees
    Vec dx(un), dres(un), dg(uc), db(uc);
    fused_bn_bwd_cpu(xs.data(), ys.data(), dys.data(), gamma.data(), mean.data(), invstd.data(),
                     dx.data(), dres.data(), dg.data(), db.data(), M, C, opt);
    const BnMags m =
        bn_magnitudes(xs, residual ? rs : Vec{}, dres, gamma, beta, mean, invstd, M, C, training);
    Guarded<float> grm(rm0), grv(rv0), gmean(C), ginv(C), gdg(C), gdb(C), smean(mean), sinv(invstd);
    Vec got_y, got_dx, got_dres;
    if (!bf) {
      Guarded<float> gx(xs), gres(rs), gdy(dys), gy(n), gys(ys), gdx(n), gdres(n);
      RZ_CUDA_CHECK(fused_bn_fwd_cuda(gx.get(), residual ? gres.get() : nullptr, gg.get(), gb.get(),
                                      gy.get(), gmean.get(), ginv.get(), grm.get(), grv.get(), M, C,
                                      opt, nullptr, stream()));
      got_y = gy.read();
      RZ_CUDA_CHECK(fused_bn_bwd_cuda(gx.get(), gys.get(), gdy.get(), gg.get(), smean.get(),
                                      sinv.get(), gdx.get(), gdres.get(), gdg.get(), gdb.get(), M,
                                      C, opt, stream()));
      got_dx = gdx.read();
      got_dres = gdres.read();
      // dx only, and dresidual written in place over dy.
      Guarded<float> gdx_only(n), inplace(dys), gdx2(n);
      RZ_CUDA_CHECK(fused_bn_bwd_cuda(gx.get(), gys.get(), gdy.get(), gg.get(), smean.get(),
                                      sinv.get(), gdx_only.get(), static_cast<float*>(nullptr),
                                      nullptr, nullptr, M, C, opt, stream()));
      expect_close("dx only", gdx_only.read(), dx, m.dx);
      RZ_CUDA_CHECK(fused_bn_bwd_cuda(gx.get(), gys.get(), inplace.get(), gg.get(), smean.get(),
                                      sinv.get(), gdx2.get(), inplace.get(), nullptr, nullptr, M, C,
                                      opt, stream()));
      expect_close("dx, dresidual in place", gdx2.read(), dx, m.dx);
      CHECK(inplace.read() == dres);
    } else {
      Guarded<bf16> gx(to_bf16(x)), gres(to_bf16(res)), gdy(to_bf16(dy)), gy(n), gys(to_bf16(ys)),
          gdx(n), gdres(n);
      RZ_CUDA_CHECK(fused_bn_fwd_cuda(gx.get(), residual ? gres.get() : nullptr, gg.get(), gb.get(),
                                      gy.get(), gmean.get(), ginv.get(), grm.get(), grv.get(), M, C,
                                      opt, nullptr, stream()));
      got_y = to_f32(gy.read());
      RZ_CUDA_CHECK(fused_bn_bwd_cuda(gx.get(), gys.get(), gdy.get(), gg.get(), smean.get(),
                                      sinv.get(), gdx.get(), gdres.get(), gdg.get(), gdb.get(), M,
                                      C, opt, stream()));
      got_dx = to_f32(gdx.read());
      got_dres = to_f32(gdres.read());
    }
    if (bf) {
      expect_nmse("y (bf16)", got_y, y);
      expect_nmse("dx (bf16)", got_dx, dx);
    } else {
      expect_close("y", got_y, y, m.y);
      expect_close("dx", got_dx, dx, m.dx);
    }
    CHECK(got_dres == dres);
    expect_close("save_mean", gmean.read(), mean, m.mean);
    expect_close("save_invstd", ginv.read(), invstd);
    expect_close("running_mean", grm.read(), rm, m.mean);
    expect_close("running_var", grv.read(), rv);
    expect_close("dgamma", gdg.read(), dg, m.dgamma);
    expect_close("dbeta", gdb.read(), db, m.dbeta);

    if (training) {  // the same forward from the producer's raw sums (conv epilogue)
      std::vector<double> sums(2 * uc, 0.0);
      for (size_t i = 0; i < un; ++i) {
        const double v = xs[i];
        sums[i % uc] += v;
        sums[uc + i % uc] += v * v;
      }
      Guarded<double> gsums(sums);
      Guarded<float> grm2(rm0), grv2(rv0), gmean2(C), ginv2(C);
      Vec got2;
      if (!bf) {
        Guarded<float> gx(xs), gres(rs), gy(n);
        RZ_CUDA_CHECK(fused_bn_fwd_cuda(gx.get(), residual ? gres.get() : nullptr, gg.get(),
                                        gb.get(), gy.get(), gmean2.get(), ginv2.get(), grm2.get(),
                                        grv2.get(), M, C, opt, gsums.get(), stream()));
        got2 = gy.read();
        expect_close("y from sums", got2, y, m.y);
      } else {
        Guarded<bf16> gx(to_bf16(x)), gres(to_bf16(res)), gy(n);
        RZ_CUDA_CHECK(fused_bn_fwd_cuda(gx.get(), residual ? gres.get() : nullptr, gg.get(),
                                        gb.get(), gy.get(), gmean2.get(), ginv2.get(), grm2.get(),
                                        grv2.get(), M, C, opt, gsums.get(), stream()));
        expect_nmse("y from sums (bf16)", to_f32(gy.read()), y);
      }
      expect_close("save_mean from sums", gmean2.read(), mean, m.mean);
      expect_close("save_invstd from sums", ginv2.read(), invstd);
      expect_close("running_mean from sums", grm2.read(), rm, m.mean);
      expect_close("running_var from sums", grv2.read(), rv);
    }
  }
}

struct Hw {
  int64_t h, w;
};
const Hw kSizes[] = {{1, 1}, {5, 5}, {7, 7}, {16, 16}, {33, 33}};
const int64_t kChannels[] = {64, 67, 256};

}  // namespace
#endif

TEST_SUITE("gpu") {
#if defined(RZ_HAVE_CUDA)
  TEST_CASE("gpu: fused SE block tail matches the CPU twin (train, eval; fp32 and bf16)") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(31);
    int64_t N = 1;
    for (const Hw hw : kSizes) {
      for (const int64_t C : kChannels) {
        N = N % 3 + 1;
        for (const bool training : {true, false}) {
          CAPTURE(N);
          CAPTURE(hw.h);
          CAPTURE(hw.w);
          CAPTURE(C);
          CAPTURE(training);
          run_se_case(make_se_problem(N, hw.h * hw.w, C, gen), training);
        }
      }
    }
    // Many row chunks per image (HW = 128x128: 64 chunks).
    CAPTURE("HW = 128x128");
    run_se_case(make_se_problem(2, 128 * 128, 64, gen), true);
  }

  TEST_CASE("gpu: fused BN (+ residual)(+ ReLU) matches the CPU twin") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(32);
    int64_t N = 1;
    for (const Hw hw : kSizes) {
      for (const int64_t C : kChannels) {
        N = N % 3 + 1;
        const int64_t M = N * hw.h * hw.w;
        CAPTURE(M);
        CAPTURE(C);
        for (const bool training : {true, false})
          for (const bool relu_on : {false, true})
            for (const bool residual : {false, true})
              run_bn_case(M, C, training, relu_on, residual, gen);
      }
    }
    // Past the 1024-chunk cap (M / 256 > 1024), odd C.
    const int64_t M = 300001, C = 67;
    CAPTURE(M);
    CAPTURE(C);
    run_bn_case(M, C, true, true, true, gen);
  }

  TEST_CASE("gpu: bn_fold_cuda matches bn_fold_cpu") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(36);
    const int64_t C = 67;
    const Vec gamma = random_vec(C, 0.5, 1.5, gen), beta = random_vec(C, -0.5, 0.5, gen);
    const Vec rm = random_vec(C, -0.2, 0.2, gen), rv = random_vec(C, 0.5, 2, gen);
    Vec scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    bn_fold_cpu(gamma.data(), beta.data(), rm.data(), rv.data(), scale.data(), shift.data(), C, kEps);
    Guarded<float> gg(gamma), gb(beta), grm(rm), grv(rv), gs(C), gh(C);
    RZ_CUDA_CHECK(bn_fold_cuda(gg.get(), gb.get(), grm.get(), grv.get(), gs.get(), gh.get(), C,
                               kEps, stream()));
    expect_close("scale", gs.read(), scale);
    expect_close("shift", gh.read(), shift);
  }

  TEST_CASE("gpu: fused launchers reject invalid sizes") {
    RZ_SKIP_WITHOUT_GPU();
    Guarded<float> x(64), y(64), p(64);
    const FusedBnOptions train{};
    CHECK(fused_bn_fwd_cuda(x.get(), static_cast<float*>(nullptr), p.get(), p.get(), y.get(),
                            nullptr, nullptr, nullptr, nullptr, 0, 8, train, nullptr,
                            stream()) == cudaErrorInvalidValue);
    const FusedBnOptions eval{false, false, kMomentum, kEps};
    CHECK(fused_bn_fwd_cuda(x.get(), static_cast<float*>(nullptr), p.get(), p.get(), y.get(),
                            nullptr, nullptr, nullptr, nullptr, 8, 8, eval, nullptr,
                            stream()) == cudaErrorInvalidValue);  // eval needs running stats
    const SeWeights<float> w{p.get(), p.get(), p.get(), p.get(), p.get(), p.get()};
    const SeSaved<float> none{nullptr, nullptr, nullptr, nullptr, nullptr};
    CHECK(fused_se_fwd_cuda(x.get(), x.get(), w, y.get(), none, nullptr, nullptr,
                            SeDims{0, 1, 8, 8}, FusedSeOptions{}, nullptr,
                            stream()) == cudaErrorInvalidValue);  // empty batch
    CHECK(fused_se_bwd_cuda(x.get(), x.get(), x.get(), w, none.as_input(), y.get(), y.get(),
                            SeGrads<float>{}, SeDims{1, 4, 8, 8}, FusedSeOptions{},
                            stream()) == cudaErrorInvalidValue);  // saved vectors required
    CHECK(y.read().size() == 64);                                 // nothing written out of bounds
  }
#endif
}
