// Fused BN and fused SE block tail CPU twins (kernels/cpu/fused_bn.h,
// kernels/cpu/fused_se.h):
//   - in double they equal the composition of the existing CPU kernels
//     (batch_norm_*_cpu, global_avg_pool, linear, relu, sigmoid,
//     channel_scale, add) on odd shapes, forward and backward, to 1e-12 of
//     the largest reference value of each output;
//   - their backward matches central finite differences in double for every
//     input and parameter (small shapes, the seeds keep ReLU inputs away from
//     their kinks);
//   - the shared math (kernels/common/se_math.h): row chunking and the CUDA
//     walk's lane rows (every row once), the partial-sum layouts, and
//     shifted-sum statistics against a two-pass formula;
//   - results do not depend on the thread count.
// Outputs are pre-filled with NaN (they must be written) inside sentinels.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/common/se_math.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/channel_scale.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/fused_bn.h"
#include "kernels/cpu/fused_se.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/pool.h"

namespace {

using Vec = std::vector<double>;
constexpr double kMomentum = 0.1, kEps = 1e-5;

Vec uniform(int64_t n, double lo, double hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = d(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

double max_abs(const Vec& v) {
  double m = 0.0;
  for (const double e : v) m = std::max(m, std::fabs(e));
  return m;
}

// An output buffer: NaN inside, sentinels on both sides.
struct Out {
  static constexpr size_t kGuard = 8;
  static constexpr double kSentinel = -12345.5;
  std::vector<double> v;
  explicit Out(int64_t n) : v(static_cast<size_t>(n) + 2 * kGuard, kSentinel) {
    std::fill(v.begin() + kGuard, v.end() - kGuard, std::numeric_limits<double>::quiet_NaN());
  }
  explicit Out(const Vec& init) : Out(static_cast<int64_t>(init.size())) {
    std::copy(init.begin(), init.end(), v.begin() + kGuard);
  }
  double* p() { return v.data() + kGuard; }
  Vec vals() const { return Vec(v.begin() + kGuard, v.end() - kGuard); }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (v[i] != kSentinel || v[v.size() - 1 - i] != kSentinel) return false;
    return true;
  }
};

// |got - ref| <= 1e-12 * max(1, max |ref|) elementwise (values here are O(1)).
void expect_same(const char* what, const Vec& got, const Vec& ref) {
  INFO("output: ", what);
  REQUIRE(got.size() == ref.size());
  const double tol = 1e-12 * std::max(1.0, max_abs(ref));
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    worst = std::isnan(e) ? 1e30 : std::max(worst, e);
  }
  INFO("worst |fused - composed| ", worst, ", tolerance ", tol);
  CHECK(worst <= tol);
}

void expect_same(const char* what, const Out& got, const Vec& ref) {
  INFO("output: ", what);
  CHECK(got.guards_intact());
  expect_same(what, got.vals(), ref);
}

// Compares grad with central differences of loss() as x[i] moves.
void check_grad(const char* what, Vec& x, const std::function<double()>& loss, const Vec& grad,
                double h = 1e-6) {
  INFO("output: ", what);
  REQUIRE(grad.size() == x.size());
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    const double e = std::fabs(grad[i] - fd) / (1.0 + std::fabs(fd));
    worst = std::isnan(e) ? 1e30 : std::max(worst, e);
  }
  INFO("worst relative gradient error ", worst, " over ", x.size(), " elements");
  CHECK(worst < 1e-6);
}

Vec eval_invstd(const Vec& rv) {
  Vec out(rv.size());
  for (size_t c = 0; c < rv.size(); ++c) out[c] = 1.0 / std::sqrt(rv[c] + kEps);
  return out;
}

// ---------------------------------------------------------------- fused BN

struct BnCase {
  int64_t M, C;
  Vec x, res, gamma, beta, rm, rv, dy;
};

BnCase make_bn_case(int64_t M, int64_t C, uint64_t seed) {
  return {M,
          C,
          uniform(M * C, -1, 3, seed),
          uniform(M * C, -1, 1, seed + 1),
          uniform(C, 0.5, 1.5, seed + 2),
          uniform(C, -0.5, 0.5, seed + 3),
          uniform(C, -0.2, 0.2, seed + 4),
          uniform(C, 0.5, 2, seed + 5),
          uniform(M * C, -1, 1, seed + 6)};
}

// BN (+ add)(+ ReLU) composed from the existing kernels. Returns y; writes the
// statistics used and updates rm / rv (training).
struct BnRef {
  Vec y, mean, invstd, rm, rv;
};

BnRef bn_reference(const BnCase& k, bool training, bool relu_on, bool residual) {
  const auto n = static_cast<size_t>(k.M * k.C), uc = static_cast<size_t>(k.C);
  BnRef r{Vec(n), Vec(uc), Vec(uc), k.rm, k.rv};
  if (training) {
    rz::batch_norm_fwd_train_cpu(k.x.data(), k.gamma.data(), k.beta.data(), r.y.data(),
                                 r.mean.data(), r.invstd.data(), r.rm.data(), r.rv.data(), k.M, k.C,
                                 kMomentum, kEps);
  } else {
    rz::batch_norm_fwd_eval_cpu(k.x.data(), k.gamma.data(), k.beta.data(), k.rm.data(), k.rv.data(),
                                r.y.data(), k.M, k.C, kEps);
    r.mean = k.rm;
    r.invstd = eval_invstd(k.rv);
  }
  if (residual) rz::add_cpu(r.y.data(), k.res.data(), r.y.data(), k.M * k.C);
  if (relu_on) rz::relu_fwd_cpu(r.y.data(), r.y.data(), k.M * k.C);
  return r;
}

// ---------------------------------------------------------------- fused SE

struct SeCase {
  rz::SeDims d;
  Vec t, sc, gamma, beta, w1, b1, w2, b2, rm, rv, dout;
  rz::SeWeights<double> weights() const {
    return {gamma.data(), beta.data(), w1.data(), b1.data(), w2.data(), b2.data()};
  }
};

SeCase make_se_case(int64_t N, int64_t HW, int64_t C, int64_t rd, uint64_t seed) {
  const double b1w = 1.0 / std::sqrt(static_cast<double>(C)),
               b2w = 1.0 / std::sqrt(static_cast<double>(rd));
  return {{N, HW, C, rd},
          uniform(N * HW * C, -1, 3, seed),
          uniform(N * HW * C, -1, 1, seed + 1),
          uniform(C, 0.5, 1.5, seed + 2),
          uniform(C, -0.5, 0.5, seed + 3),
          uniform(rd * C, -2 * b1w, 2 * b1w, seed + 4),
          uniform(rd, -b1w, b1w, seed + 5),
          uniform(C * rd, -2 * b2w, 2 * b2w, seed + 6),
          uniform(C, -b2w, b2w, seed + 7),
          uniform(C, -0.2, 0.2, seed + 8),
          uniform(C, 0.5, 2, seed + 9),
          uniform(N * HW * C, -1, 1, seed + 10)};
}

// The unfused SE tail, forward and backward, from the existing kernels.
struct SeRef {
  Vec u, p, a1, z, a2, s, v, out, mean, invstd, rm, rv;
  Vec g, du1, ds, dzs, dz, dh, dp, du2, du, dt, dgamma, dbeta, dw1, db1, dw2, db2;
};

SeRef se_reference(const SeCase& k, bool training) {
  const int64_t N = k.d.N, HW = k.d.HW, C = k.d.C, rd = k.d.rd, M = N * HW, n = M * C;
  const auto un = static_cast<size_t>(n), unc = static_cast<size_t>(N * C),
             unr = static_cast<size_t>(N * rd), uc = static_cast<size_t>(C);
  SeRef r;
  r.u.resize(un);
  r.mean.resize(uc);
  r.invstd.resize(uc);
  r.rm = k.rm;
  r.rv = k.rv;
  if (training) {
    rz::batch_norm_fwd_train_cpu(k.t.data(), k.gamma.data(), k.beta.data(), r.u.data(),
                                 r.mean.data(), r.invstd.data(), r.rm.data(), r.rv.data(), M, C,
                                 kMomentum, kEps);
  } else {
    rz::batch_norm_fwd_eval_cpu(k.t.data(), k.gamma.data(), k.beta.data(), k.rm.data(), k.rv.data(),
                                r.u.data(), M, C, kEps);
    r.mean = k.rm;
    r.invstd = eval_invstd(k.rv);
  }
  r.p.resize(unc);
  rz::global_avg_pool_fwd_cpu(r.u.data(), r.p.data(), N, HW, C);
  r.a1.resize(unr);
  rz::linear_fwd_cpu(r.p.data(), k.w1.data(), k.b1.data(), r.a1.data(), N, C, rd);
  r.z.resize(unr);
  rz::relu_fwd_cpu(r.a1.data(), r.z.data(), N * rd);
  r.a2.resize(unc);
  rz::linear_fwd_cpu(r.z.data(), k.w2.data(), k.b2.data(), r.a2.data(), N, rd, C);
  r.s.resize(unc);
  rz::sigmoid_fwd_cpu(r.a2.data(), r.s.data(), N * C);
  r.v.resize(un);
  rz::channel_scale_fwd_cpu(r.u.data(), r.s.data(), r.v.data(), N, HW, C);
  r.out.resize(un);
  rz::add_cpu(r.v.data(), k.sc.data(), r.out.data(), n);
  rz::relu_fwd_cpu(r.out.data(), r.out.data(), n);

  // Backward: relu -> (add: g to both) -> channel scale -> sigmoid -> fc2 ->
  // relu -> fc1 -> global pool -> (u used twice: du1 + du2) -> BN.
  r.g.resize(un);
  rz::relu_bwd_cpu(r.out.data(), k.dout.data(), r.g.data(), n);
  r.du1.resize(un);
  r.ds.resize(unc);
  rz::channel_scale_bwd_cpu(r.u.data(), r.s.data(), r.g.data(), r.du1.data(), r.ds.data(), N, HW,
                            C);
  r.dzs.resize(unc);
  rz::sigmoid_bwd_cpu(r.s.data(), r.ds.data(), r.dzs.data(), N * C);
  r.dz.resize(unr);
  r.dw2.resize(static_cast<size_t>(C * rd));
  r.db2.resize(uc);
  rz::linear_bwd_cpu(r.z.data(), k.w2.data(), r.dzs.data(), r.dz.data(), r.dw2.data(), r.db2.data(),
                     N, rd, C);
  r.dh.resize(unr);
  rz::relu_bwd_cpu(r.z.data(), r.dz.data(), r.dh.data(), N * rd);
  r.dp.resize(unc);
  r.dw1.resize(static_cast<size_t>(rd * C));
  r.db1.resize(static_cast<size_t>(rd));
  rz::linear_bwd_cpu(r.p.data(), k.w1.data(), r.dh.data(), r.dp.data(), r.dw1.data(), r.db1.data(),
                     N, C, rd);
  r.du2.resize(un);
  rz::global_avg_pool_bwd_cpu(r.dp.data(), r.du2.data(), N, HW, C);
  r.du.resize(un);
  rz::add_cpu(r.du1.data(), r.du2.data(), r.du.data(), n);
  r.dt.resize(un);
  r.dgamma.resize(uc);
  r.dbeta.resize(uc);
  rz::batch_norm_bwd_cpu(k.t.data(), r.du.data(), k.gamma.data(), r.mean.data(), r.invstd.data(),
                         r.dt.data(), r.dgamma.data(), r.dbeta.data(), M, C, training);
  return r;
}

// Saved vectors (fused forward outputs) in guarded buffers.
struct SeSavedBufs {
  Out mean, invstd, pooled, hidden, gate;
  explicit SeSavedBufs(const rz::SeDims& d)
      : mean(d.C), invstd(d.C), pooled(d.N * d.C), hidden(d.N * d.rd), gate(d.N * d.C) {}
  rz::SeSaved<double> ptrs() { return {mean.p(), invstd.p(), pooled.p(), hidden.p(), gate.p()}; }
};

struct SeGradBufs {
  Out dt, dsc, dgamma, dbeta, dw1, db1, dw2, db2;
  explicit SeGradBufs(const rz::SeDims& d)
      : dt(d.N * d.HW * d.C),
        dsc(d.N * d.HW * d.C),
        dgamma(d.C),
        dbeta(d.C),
        dw1(d.rd * d.C),
        db1(d.rd),
        dw2(d.C * d.rd),
        db2(d.C) {}
  rz::SeGrads<double> ptrs() { return {dgamma.p(), dbeta.p(), dw1.p(), db1.p(), dw2.p(), db2.p()}; }
};

int64_t se_rd(int64_t C) {  // timm: max(8, int(C/16 + 4) // 8 * 8)
  return std::max<int64_t>(8, static_cast<int64_t>(static_cast<double>(C) / 16.0 + 4.0) / 8 * 8);
}

}  // namespace

TEST_CASE("cpu kernels: fused row chunks cover every row") {
  for (int64_t L = 1; L < 5000; L += (L < 600 ? 1 : 37)) {
    const rz::RowChunks ch = rz::fused_row_chunks(L);
    CAPTURE(L);
    CHECK(ch.count >= 1);
    CHECK(ch.count <= rz::kFusedMaxChunks);
    CHECK(ch.rows >= 1);
    CHECK((ch.count - 1) * ch.rows < L);
    CHECK(L <= ch.count * ch.rows);
  }
  for (const int64_t L : {int64_t{1} << 20, (int64_t{1} << 21) + 7, int64_t{32} * 16384}) {
    const rz::RowChunks ch = rz::fused_row_chunks(L);
    CHECK(ch.count == rz::kFusedMaxChunks);
    CHECK((ch.count - 1) * ch.rows < L);
    CHECK(L <= ch.count * ch.rows);
  }
}

TEST_CASE("cpu kernels: fused walk visits every row once and partial layouts are bijective") {
  // The CUDA walks: chunk = blockIdx.y, lane = threadIdx.y of 8 row lanes.
  constexpr int64_t kLanes = 8;
  for (const int64_t L : {int64_t{1}, int64_t{7}, int64_t{255}, int64_t{256}, int64_t{257},
                          int64_t{1089}, int64_t{16384}, int64_t{300001}}) {
    CAPTURE(L);
    const rz::RowChunks ch = rz::fused_row_chunks(L);
    std::vector<int> visits(static_cast<size_t>(L), 0);
    for (int64_t chunk = 0; chunk < ch.count; ++chunk)
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        const rz::LaneRows rows = rz::chunk_lane_rows(ch, L, chunk, lane);
        for (int64_t r = rows.first; r < rows.end; r += kLanes) ++visits[static_cast<size_t>(r)];
      }
    CHECK(std::all_of(visits.begin(), visits.end(), [](int v) { return v == 1; }));
  }
  const int64_t N = 3, chunks = 5, K = 3, C = 7;
  std::vector<int> hits(static_cast<size_t>(N * chunks * K * C), 0),
      sums(static_cast<size_t>(K * N * C), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t j = 0; j < chunks; ++j)
          ++hits[static_cast<size_t>(rz::seg_partial_index(n, j, k, c, chunks, K, C))];
        ++sums[static_cast<size_t>(rz::seg_sum_index(k, n, c, N, C))];
      }
  CHECK(std::all_of(hits.begin(), hits.end(), [](int v) { return v == 1; }));
  CHECK(std::all_of(sums.begin(), sums.end(), [](int v) { return v == 1; }));
  CHECK(rz::nlc_index(2, 4, 5, 6, 7) == (2 * 6 + 4) * 7 + 5);
}

TEST_CASE("cpu kernels: shifted-sum statistics match the two-pass formula") {
  // A channel whose mean is 1e4 times its spread: E[x^2] - E[x]^2 would lose
  // about 8 digits, the shifted sums keep about 15.
  const int64_t m = 1001;
  const Vec x = [&] {
    Vec v = uniform(m, -1, 1, 3);
    for (double& e : v) e += 1e4;
    return v;
  }();
  double s1 = 0, s2 = 0;
  for (const double e : x) {
    s1 += e - x[0];
    s2 += (e - x[0]) * (e - x[0]);
  }
  const rz::BnMoments mo = rz::bn_moments_from_shifted(s1, s2, 1.0 / static_cast<double>(m));
  double mu = 0;
  for (const double e : x) mu += e;
  mu /= static_cast<double>(m);
  double var = 0;
  for (const double e : x) var += (e - mu) * (e - mu);
  var /= static_cast<double>(m);
  CHECK(x[0] + mo.mean_minus_shift == doctest::Approx(mu).epsilon(1e-14));
  CHECK(mo.var == doctest::Approx(var).epsilon(1e-9));
  // A constant channel: variance exactly 0, never negative.
  CHECK(rz::bn_moments_from_shifted(0.0, 0.0, 0.25).var == 0.0);
  CHECK(rz::bn_moments_from_shifted(1e-9, 0.0, 1.0).var == 0.0);
}

TEST_CASE("cpu kernels: fused BN equals BN + add + ReLU composed (double)") {
  uint64_t seed = 100;
  for (const auto [M, C] : {std::array<int64_t, 2>{1, 3}, {2, 5}, {35, 67}, {147, 8}, {1031, 3}}) {
    for (const bool training : {true, false}) {
      for (const bool relu_on : {false, true}) {
        for (const bool residual : {false, true}) {
          CAPTURE(M);
          CAPTURE(C);
          CAPTURE(training);
          CAPTURE(relu_on);
          CAPTURE(residual);
          const BnCase k = make_bn_case(M, C, seed += 10);
          const BnRef ref = bn_reference(k, training, relu_on, residual);
          const rz::FusedBnOptions opt{training, relu_on, kMomentum, kEps};

          Out y(M * C), mean(C), invstd(C), rm(k.rm), rv(k.rv);
          rz::fused_bn_fwd_cpu(k.x.data(), residual ? k.res.data() : nullptr, k.gamma.data(),
                               k.beta.data(), y.p(), mean.p(), invstd.p(), rm.p(), rv.p(), M, C,
                               opt);
          expect_same("y", y, ref.y);
          expect_same("save_mean", mean, ref.mean);
          expect_same("save_invstd", invstd, ref.invstd);
          expect_same("running_mean", rm, ref.rm);
          expect_same("running_var", rv, ref.rv);

          // Backward from the reference statistics and output.
          Vec g(k.dy.size());
          if (relu_on)
            rz::relu_bwd_cpu(ref.y.data(), k.dy.data(), g.data(), M * C);
          else
            g = k.dy;
          Vec rdx(g.size()), rdg(static_cast<size_t>(C)), rdb(static_cast<size_t>(C));
          rz::batch_norm_bwd_cpu(k.x.data(), g.data(), k.gamma.data(), ref.mean.data(),
                                 ref.invstd.data(), rdx.data(), rdg.data(), rdb.data(), M, C,
                                 training);
          Out dx(M * C), dres(M * C), dg(C), db(C);
          rz::fused_bn_bwd_cpu(k.x.data(), ref.y.data(), k.dy.data(), k.gamma.data(),
                               ref.mean.data(), ref.invstd.data(), dx.p(), dres.p(), dg.p(), db.p(),
                               M, C, opt);
          expect_same("dx", dx, rdx);
          expect_same("dresidual", dres, g);
          expect_same("dgamma", dg, rdg);
          expect_same("dbeta", db, rdb);

          // dx alone, and dresidual written in place over dy.
          Out dx_only(M * C);
          rz::fused_bn_bwd_cpu<double>(k.x.data(), ref.y.data(), k.dy.data(), k.gamma.data(),
                                       ref.mean.data(), ref.invstd.data(), dx_only.p(), nullptr,
                                       nullptr, nullptr, M, C, opt);
          expect_same("dx only", dx_only, rdx);
          Out inplace(k.dy), dx2(M * C);
          rz::fused_bn_bwd_cpu<double>(k.x.data(), ref.y.data(), inplace.p(), k.gamma.data(),
                                       ref.mean.data(), ref.invstd.data(), dx2.p(), inplace.p(),
                                       nullptr, nullptr, M, C, opt);
          expect_same("dresidual in place", inplace, g);
          expect_same("dx with in-place dresidual", dx2, rdx);
        }
      }
    }
  }
}

TEST_CASE("cpu kernels: fused BN from the producer's raw sums equals its own statistics pass") {
  // The sums a convolution epilogue hands over (sum and sum of squares of x
  // per channel, kernels/common/conv_epilogue.h), computed here directly.
  uint64_t seed = 700;
  for (const auto [M, C] : {std::array<int64_t, 2>{2, 5}, {35, 67}, {1031, 3}}) {
    for (const bool relu_on : {false, true}) {
      for (const bool residual : {false, true}) {
        CAPTURE(M);
        CAPTURE(C);
        CAPTURE(relu_on);
        CAPTURE(residual);
        const BnCase k = make_bn_case(M, C, seed += 10);
        const BnRef ref = bn_reference(k, true, relu_on, residual);
        Vec sums(static_cast<size_t>(2 * C), 0.0);
        for (int64_t r = 0; r < M; ++r)
          for (int64_t c = 0; c < C; ++c) {
            const double v = k.x[static_cast<size_t>(r * C + c)];
            sums[static_cast<size_t>(c)] += v;
            sums[static_cast<size_t>(C + c)] += v * v;
          }
        const rz::FusedBnOptions opt{true, relu_on, kMomentum, kEps};
        Out y(M * C), mean(C), invstd(C), rm(k.rm), rv(k.rv);
        rz::fused_bn_fwd_cpu(k.x.data(), residual ? k.res.data() : nullptr, k.gamma.data(),
                             k.beta.data(), y.p(), mean.p(), invstd.p(), rm.p(), rv.p(), M, C, opt,
                             sums.data());
        expect_same("y", y, ref.y);
        expect_same("save_mean", mean, ref.mean);
        expect_same("save_invstd", invstd, ref.invstd);
        expect_same("running_mean", rm, ref.rm);
        expect_same("running_var", rv, ref.rv);
      }
    }
  }
}

TEST_CASE("cpu kernels: bn_fold turns eval BN into the affine x * scale + shift") {
  const BnCase k = make_bn_case(19, 11, 900);
  const BnRef ref = bn_reference(k, false, false, false);
  Out scale(k.C), shift(k.C);
  rz::bn_fold_cpu(k.gamma.data(), k.beta.data(), k.rm.data(), k.rv.data(), scale.p(), shift.p(),
                  k.C, kEps);
  CHECK(scale.guards_intact());
  CHECK(shift.guards_intact());
  Vec y(k.x.size());
  for (size_t i = 0; i < y.size(); ++i) {
    const size_t c = i % static_cast<size_t>(k.C);
    y[i] = k.x[i] * scale.p()[c] + shift.p()[c];
  }
  expect_same("x * scale + shift", y, ref.y);
  // The formula itself: scale = gamma / sqrt(var + eps).
  CHECK(scale.p()[0] == doctest::Approx(k.gamma[0] / std::sqrt(k.rv[0] + kEps)).epsilon(1e-15));
}

TEST_CASE("cpu kernels: fused BN gradients match finite differences") {
  const int64_t M = 7, C = 3;
  for (const bool training : {true, false}) {
    for (const bool relu_on : {false, true}) {
      CAPTURE(training);
      CAPTURE(relu_on);
      BnCase k = make_bn_case(M, C, training ? 7 : 8);
      const rz::FusedBnOptions opt{training, relu_on, kMomentum, kEps};
      const Vec w = uniform(M * C, -1, 1, 9);
      Vec y(static_cast<size_t>(M * C)), mean(static_cast<size_t>(C)), invstd(mean.size());
      // running stats are read in eval, not updated (nullptr) in training.
      double* rm = training ? nullptr : k.rm.data();
      double* rv = training ? nullptr : k.rv.data();
      const auto loss = [&] {
        rz::fused_bn_fwd_cpu(k.x.data(), k.res.data(), k.gamma.data(), k.beta.data(), y.data(),
                             mean.data(), invstd.data(), rm, rv, M, C, opt);
        return dot(w, y);
      };
      loss();
      const Vec y0 = y, mean0 = mean, invstd0 = invstd;
      Vec dx(y.size()), dres(y.size()), dg(mean.size()), db(mean.size());
      rz::fused_bn_bwd_cpu(k.x.data(), y0.data(), w.data(), k.gamma.data(), mean0.data(),
                           invstd0.data(), dx.data(), dres.data(), dg.data(), db.data(), M, C, opt);
      check_grad("x", k.x, loss, dx);
      check_grad("residual", k.res, loss, dres);
      check_grad("gamma", k.gamma, loss, dg);
      check_grad("beta", k.beta, loss, db);
    }
  }
}

TEST_CASE("cpu kernels: fused SE tail equals the unfused composition (double)") {
  struct Shape {
    int64_t N, HW, C;
  };
  uint64_t seed = 1000;
  for (const Shape sh :
       {Shape{1, 1, 8}, {2, 1, 67}, {3, 35, 67}, {2, 49, 64}, {1, 25, 256}, {3, 16, 13}}) {
    for (const bool training : {true, false}) {
      const int64_t rd = se_rd(sh.C);
      CAPTURE(sh.N);
      CAPTURE(sh.HW);
      CAPTURE(sh.C);
      CAPTURE(rd);
      CAPTURE(training);
      const SeCase k = make_se_case(sh.N, sh.HW, sh.C, rd, seed += 20);
      const SeRef ref = se_reference(k, training);
      const rz::FusedSeOptions opt{training, kMomentum, kEps};

      Out out(sh.N * sh.HW * sh.C), rm(k.rm), rv(k.rv);
      SeSavedBufs saved(k.d);
      rz::fused_se_fwd_cpu(k.t.data(), k.sc.data(), k.weights(), out.p(), saved.ptrs(), rm.p(),
                           rv.p(), k.d, opt);
      expect_same("out", out, ref.out);
      expect_same("mean", saved.mean, ref.mean);
      expect_same("invstd", saved.invstd, ref.invstd);
      expect_same("pooled", saved.pooled, ref.p);
      expect_same("hidden", saved.hidden, ref.z);
      expect_same("gate", saved.gate, ref.s);
      {  // from the producer's raw per-image sums (conv epilogue, segments = N)
        const auto uN = static_cast<size_t>(sh.N), uC = static_cast<size_t>(sh.C);
        Vec sums(2 * uN * uC, 0.0);
        for (size_t i = 0; i < k.t.size(); ++i) {
          const size_t img = i / static_cast<size_t>(sh.HW * sh.C), c = i % uC;
          sums[img * uC + c] += k.t[i];
          sums[(uN + img) * uC + c] += k.t[i] * k.t[i];
        }
        Out out2(sh.N * sh.HW * sh.C), rm2(k.rm), rv2(k.rv);
        SeSavedBufs saved2(k.d);
        rz::fused_se_fwd_cpu(k.t.data(), k.sc.data(), k.weights(), out2.p(), saved2.ptrs(), rm2.p(),
                             rv2.p(), k.d, opt, sums.data());
        expect_same("out from image sums", out2, ref.out);
        expect_same("pooled from image sums", saved2.pooled, ref.p);
        expect_same("running_var from image sums", rv2, ref.rv);
      }
      expect_same("running_mean", rm, ref.rm);
      expect_same("running_var", rv, ref.rv);

      // Saved outputs are optional.
      Out out2(sh.N * sh.HW * sh.C);
      Vec rm2 = k.rm, rv2 = k.rv;
      rz::fused_se_fwd_cpu<double>(k.t.data(), k.sc.data(), k.weights(), out2.p(),
                                   {nullptr, nullptr, nullptr, nullptr, nullptr},
                                   training ? nullptr : rm2.data(), training ? nullptr : rv2.data(),
                                   k.d, opt);
      expect_same("out without saved", out2, ref.out);

      // Backward from the reference's saved values.
      const rz::SeSaved<const double> in{ref.mean.data(), ref.invstd.data(), ref.p.data(),
                                         ref.z.data(), ref.s.data()};
      SeGradBufs gr(k.d);
      rz::fused_se_bwd_cpu(k.t.data(), ref.out.data(), k.dout.data(), k.weights(), in, gr.dt.p(),
                           gr.dsc.p(), gr.ptrs(), k.d, opt);
      expect_same("dt", gr.dt, ref.dt);
      expect_same("dshortcut", gr.dsc, ref.g);
      expect_same("dgamma", gr.dgamma, ref.dgamma);
      expect_same("dbeta", gr.dbeta, ref.dbeta);
      expect_same("dw1", gr.dw1, ref.dw1);
      expect_same("db1", gr.db1, ref.db1);
      expect_same("dw2", gr.dw2, ref.dw2);
      expect_same("db2", gr.db2, ref.db2);

      // Parameter gradients optional; dshortcut in place over dout.
      Out inplace(k.dout), dt2(sh.N * sh.HW * sh.C);
      rz::fused_se_bwd_cpu<double>(
          k.t.data(), ref.out.data(), inplace.p(), k.weights(), in, dt2.p(), inplace.p(),
          {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}, k.d, opt);
      expect_same("dt, no parameter grads", dt2, ref.dt);
      expect_same("dshortcut in place", inplace, ref.g);
    }
  }
}

TEST_CASE("cpu kernels: fused SE tail gradients match finite differences") {
  for (const bool training : {true, false}) {
    CAPTURE(training);
    const int64_t N = 2, HW = 3, C = 5, rd = 3;
    SeCase k = make_se_case(N, HW, C, rd, training ? 31 : 32);
    const rz::FusedSeOptions opt{training, kMomentum, kEps};
    const Vec w = uniform(N * HW * C, -1, 1, 33);
    Vec out(static_cast<size_t>(N * HW * C));
    Vec mean(static_cast<size_t>(C)), invstd(mean.size()), pooled(static_cast<size_t>(N * C)),
        hidden(static_cast<size_t>(N * rd)), gate(pooled.size());
    double* rm = training ? nullptr : k.rm.data();
    double* rv = training ? nullptr : k.rv.data();
    const rz::SeSaved<double> saved{mean.data(), invstd.data(), pooled.data(), hidden.data(),
                                    gate.data()};
    const auto loss = [&] {
      rz::fused_se_fwd_cpu(k.t.data(), k.sc.data(), k.weights(), out.data(), saved, rm, rv, k.d,
                           opt);
      return dot(w, out);
    };
    loss();
    // The seeds keep the ReLU inputs away from their kinks (finite
    // differences of a step +-1e-6 would straddle one otherwise).
    {
      const SeRef ref = se_reference(k, training);
      double closest = 1e30;
      for (size_t i = 0; i < ref.out.size(); ++i)
        closest = std::min(closest, std::fabs(ref.v[i] + k.sc[i]));
      for (const double a : ref.a1) closest = std::min(closest, std::fabs(a));
      REQUIRE(closest > 1e-3);
    }
    const Vec out0 = out, mean0 = mean, invstd0 = invstd, pooled0 = pooled, hidden0 = hidden,
              gate0 = gate;
    const rz::SeSaved<const double> in{mean0.data(), invstd0.data(), pooled0.data(), hidden0.data(),
                                       gate0.data()};
    const auto un = static_cast<size_t>(N * HW * C);
    Vec dt(un), dsc(un), dg(static_cast<size_t>(C)), db(dg.size()),
        dw1(static_cast<size_t>(rd * C)), db1(static_cast<size_t>(rd)), dw2(dw1.size()),
        db2(dg.size());
    rz::fused_se_bwd_cpu(
        k.t.data(), out0.data(), w.data(), k.weights(), in, dt.data(), dsc.data(),
        rz::SeGrads<double>{dg.data(), db.data(), dw1.data(), db1.data(), dw2.data(), db2.data()},
        k.d, opt);
    check_grad("t", k.t, loss, dt);
    check_grad("shortcut", k.sc, loss, dsc);
    check_grad("gamma", k.gamma, loss, dg);
    check_grad("beta", k.beta, loss, db);
    check_grad("w1", k.w1, loss, dw1);
    check_grad("b1", k.b1, loss, db1);
    check_grad("w2", k.w2, loss, dw2);
    check_grad("b2", k.b2, loss, db2);
  }
}

TEST_CASE("cpu kernels: fused BN and SE do not depend on the thread count") {
  const int64_t N = 3, HW = 401, C = 67, rd = se_rd(C), M = N * HW;
  const SeCase k = make_se_case(N, HW, C, rd, 77);
  const auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    const auto un = static_cast<size_t>(M * C), uc = static_cast<size_t>(C);
    Vec all;
    {
      Vec y(un), mean(uc), invstd(uc), dx(un), dres(un), dg(uc), db(uc);
      const rz::FusedBnOptions opt{true, true, kMomentum, kEps};
      rz::fused_bn_fwd_cpu<double>(k.t.data(), k.sc.data(), k.gamma.data(), k.beta.data(), y.data(),
                                   mean.data(), invstd.data(), nullptr, nullptr, M, C, opt);
      rz::fused_bn_bwd_cpu(k.t.data(), y.data(), k.dout.data(), k.gamma.data(), mean.data(),
                           invstd.data(), dx.data(), dres.data(), dg.data(), db.data(), M, C, opt);
      for (const Vec* v : {&y, &mean, &invstd, &dx, &dres, &dg, &db})
        all.insert(all.end(), v->begin(), v->end());
    }
    {
      Vec out(un), mean(uc), invstd(uc), pooled(static_cast<size_t>(N * C)),
          hidden(static_cast<size_t>(N * rd)), gate(pooled.size());
      Vec dt(un), dsc(un), dg(uc), db(uc), dw1(static_cast<size_t>(rd * C)),
          db1(static_cast<size_t>(rd)), dw2(dw1.size()), db2(uc);
      const rz::FusedSeOptions opt{true, kMomentum, kEps};
      const rz::SeSaved<double> saved{mean.data(), invstd.data(), pooled.data(), hidden.data(),
                                      gate.data()};
      rz::fused_se_fwd_cpu<double>(k.t.data(), k.sc.data(), k.weights(), out.data(), saved, nullptr,
                                   nullptr, k.d, opt);
      rz::fused_se_bwd_cpu(
          k.t.data(), out.data(), k.dout.data(), k.weights(), saved.as_input(), dt.data(),
          dsc.data(),
          rz::SeGrads<double>{dg.data(), db.data(), dw1.data(), db1.data(), dw2.data(), db2.data()},
          k.d, opt);
      for (const Vec* v :
           {&out, &pooled, &hidden, &gate, &dt, &dsc, &dg, &db, &dw1, &db1, &dw2, &db2})
        all.insert(all.end(), v->begin(), v->end());
    }
    omp_set_num_threads(before);
    return all;
  };
  CHECK(run(1) == run(3));
}

TEST_CASE("cpu kernels: fused float instantiations agree with double") {
  const int64_t N = 2, HW = 9, C = 11, rd = 8, n = N * HW * C;
  const SeCase k = make_se_case(N, HW, C, rd, 55);
  const auto f = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::vector<float> t = f(k.t), sc = f(k.sc), gamma = f(k.gamma), beta = f(k.beta),
                           w1 = f(k.w1), b1 = f(k.b1), w2 = f(k.w2), b2 = f(k.b2), dout = f(k.dout);
  const rz::SeWeights<float> wf{gamma.data(), beta.data(), w1.data(),
                                b1.data(),    w2.data(),   b2.data()};
  std::vector<float> out(static_cast<size_t>(n)), mean(C), invstd(C), pooled(N * C), hidden(N * rd),
      gate(N * C), dt(out.size()), dsc(out.size());
  const rz::SeSaved<float> saved{mean.data(), invstd.data(), pooled.data(), hidden.data(),
                                 gate.data()};
  rz::fused_se_fwd_cpu<float>(t.data(), sc.data(), wf, out.data(), saved, nullptr, nullptr, k.d,
                              {});
  rz::fused_se_bwd_cpu(t.data(), out.data(), dout.data(), wf, saved.as_input(), dt.data(),
                       dsc.data(), rz::SeGrads<float>{}, k.d, {});
  const SeRef ref = se_reference(k, true);
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i] == doctest::Approx(ref.out[i]).epsilon(1e-5));
    CHECK(dt[i] == doctest::Approx(ref.dt[i]).epsilon(1e-4).scale(max_abs(ref.dt)));
  }
  std::vector<float> y(static_cast<size_t>(n)), dx(y.size());
  rz::fused_bn_fwd_cpu<float>(t.data(), sc.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                              invstd.data(), nullptr, nullptr, N * HW, C,
                              rz::FusedBnOptions{true, true});
  rz::fused_bn_bwd_cpu<float>(t.data(), y.data(), dout.data(), gamma.data(), mean.data(),
                              invstd.data(), dx.data(), nullptr, nullptr, nullptr, N * HW, C,
                              rz::FusedBnOptions{true, true});
  const BnCase bk{N * HW, C, k.t, k.sc, k.gamma, k.beta, k.rm, k.rv, k.dout};
  const BnRef bref = bn_reference(bk, true, true, true);
  for (size_t i = 0; i < y.size(); ++i)
    CHECK(y[i] == doctest::Approx(bref.y[i]).epsilon(1e-5).scale(1.0));
}
