// CPU twins: forward values against hand-worked numbers or naive formulas
// written here, backward against central finite differences (double) of
// L = sum(w * y) with random weights w. Backward outputs are pre-filled with
// NaN (they must be overwritten) and guarded by sentinels (no stray writes).
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/common/loss_math.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/channel_scale.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/pool.h"

namespace {

using Vec = std::vector<double>;
const double kLog2 = std::log(2.0);

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

// A backward output: NaN inside, sentinels on both sides.
struct Out {
  static constexpr size_t kGuard = 8;
  static constexpr double kSentinel = -12345.5;
  std::vector<double> v;
  explicit Out(int64_t n) : v(static_cast<size_t>(n) + 2 * kGuard, kSentinel) {
    std::fill(v.begin() + kGuard, v.end() - kGuard, std::numeric_limits<double>::quiet_NaN());
  }
  double* p() { return v.data() + kGuard; }
  Vec vals() const { return Vec(v.begin() + kGuard, v.end() - kGuard); }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (v[i] != kSentinel || v[v.size() - 1 - i] != kSentinel) return false;
    return true;
  }
};

// Compares grad with central differences of loss() as x[i] moves.
void check_grad(Vec& x, const std::function<double()>& loss, const Out& grad, double h = 1e-6) {
  REQUIRE(grad.guards_intact());
  const Vec g = grad.vals();
  REQUIRE(g.size() == x.size());
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    worst = std::max(worst, std::fabs(g[i] - fd) / (1.0 + std::fabs(fd)));  // NaN fails below
    if (std::isnan(g[i])) worst = 1e30;
  }
  INFO("worst relative gradient error ", worst, " over ", x.size(), " elements");
  CHECK(worst < 1e-6);
}

}  // namespace

TEST_CASE("cpu kernels: activation values") {
  const Vec x = {-3.0, -0.5, 0.0, 0.25, 2.0, -40.0, 40.0, -1000.0, 1000.0};
  Vec y(x.size());
  rz::relu_fwd_cpu(x.data(), y.data(), static_cast<int64_t>(x.size()));
  CHECK(y == Vec{0, 0, 0, 0.25, 2.0, 0, 40.0, 0, 1000.0});
  rz::sigmoid_fwd_cpu(x.data(), y.data(), static_cast<int64_t>(x.size()));
  CHECK(y[1] == doctest::Approx(0.3775406687981454).epsilon(1e-15));
  CHECK(y[2] == 0.5);
  CHECK(y[4] == doctest::Approx(0.8807970779778823).epsilon(1e-15));
  CHECK(y[5] == doctest::Approx(4.248354255291589e-18).scale(0).epsilon(1e-12));  // e^-40
  CHECK(y[6] == 1.0);
  CHECK(y[7] == 0.0);
  CHECK(y[8] == 1.0);
  const std::vector<float> xf = {-40.f, 40.f, -1000.f, 1000.f};
  std::vector<float> yf(4);
  rz::sigmoid_fwd_cpu(xf.data(), yf.data(), 4);
  CHECK(yf[0] == doctest::Approx(4.248354e-18).scale(0).epsilon(1e-5));
  CHECK(yf[1] == 1.0f);
  CHECK(yf[2] == 0.0f);
  CHECK(yf[3] == 1.0f);
}

TEST_CASE("cpu kernels: activation gradients") {
  const int64_t n = 37;
  Vec x = uniform(n, 0.1, 2.0, 1);
  for (int64_t i = 0; i < n; i += 2) x[i] = -x[i];  // half negative, all |x| >= 0.1
  const Vec w = uniform(n, -1, 1, 2);
  Vec y(x.size());
  using Fwd = void (*)(const double*, double*, int64_t);
  using Bwd = void (*)(const double*, const double*, double*, int64_t);
  const std::pair<Fwd, Bwd> ops[] = {{rz::relu_fwd_cpu<double>, rz::relu_bwd_cpu<double>},
                                     {rz::sigmoid_fwd_cpu<double>, rz::sigmoid_bwd_cpu<double>}};
  for (const auto& [fwd, bwd] : ops) {
    fwd(x.data(), y.data(), n);
    Out dx(n);
    bwd(y.data(), w.data(), dx.p(), n);
    check_grad(
        x,
        [&] {
          fwd(x.data(), y.data(), n);
          return dot(w, y);
        },
        dx);
  }
}

TEST_CASE("cpu kernels: channel scale") {
  for (const auto [N, HW, C] : {std::array<int64_t, 3>{2, 5, 3}, {1, 3, 70}}) {
    Vec x = uniform(N * HW * C, -1, 1, 3), s = uniform(N * C, -2, 2, 4);
    const Vec w = uniform(N * HW * C, -1, 1, 5);
    Vec y(x.size());
    rz::channel_scale_fwd_cpu(x.data(), s.data(), y.data(), N, HW, C);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c)
          REQUIRE(y[(n * HW + i) * C + c] == x[(n * HW + i) * C + c] * s[n * C + c]);
    Out dx(N * HW * C), ds(N * C);
    rz::channel_scale_bwd_cpu(x.data(), s.data(), w.data(), dx.p(), ds.p(), N, HW, C);
    const auto loss = [&] {
      rz::channel_scale_fwd_cpu(x.data(), s.data(), y.data(), N, HW, C);
      return dot(w, y);
    };
    check_grad(x, loss, dx);
    check_grad(s, loss, ds);
    Out dx2(N * HW * C), ds2(N * C);  // either output alone
    rz::channel_scale_bwd_cpu<double>(x.data(), s.data(), w.data(), dx2.p(), nullptr, N, HW, C);
    rz::channel_scale_bwd_cpu<double>(x.data(), s.data(), w.data(), nullptr, ds2.p(), N, HW, C);
    CHECK(dx2.v == dx.v);
    CHECK(ds2.v == ds.v);
  }
}

TEST_CASE("cpu kernels: pool_out_size follows PyTorch") {
  // (in + 2p - k [+ s - 1 with ceil]) / s + 1, minus one when ceil's last window starts at >= in +
  // p.
  CHECK(rz::pool_out_size(5, 2, 2, 0, true) == 3);      // (5-2+1)/2+1 = 3; 4 < 5 keeps it
  CHECK(rz::pool_out_size(5, 2, 2, 0, false) == 2);     // 3/2+1
  CHECK(rz::pool_out_size(4, 2, 2, 0, true) == 2);      // (4-2+1)/2+1 = 2
  CHECK(rz::pool_out_size(7, 3, 2, 1, false) == 4);     // 6/2+1
  CHECK(rz::pool_out_size(7, 3, 2, 1, true) == 4);      // 7/2+1
  CHECK(rz::pool_out_size(5, 2, 2, 1, true) == 3);      // 6/2+1 = 4, but 3*2 = 6 >= 5+1: dropped
  CHECK(rz::pool_out_size(5, 2, 2, 1, false) == 3);     // 5/2+1
  CHECK(rz::pool_out_size(6, 3, 2, 1, true) == 4);      // 6/2+1 = 4, 3*2 = 6 < 7 kept
  CHECK(rz::pool_out_size(6, 3, 2, 1, false) == 3);     // 5/2+1
  CHECK(rz::pool_out_size(112, 3, 2, 1, false) == 56);  // the stem max pool
  const rz::Pool2dGeom g = rz::make_pool2d_geom(2, 5, 6, 3, 2, 3, 2, 2, 0, 1, true);
  CHECK(g.OH == 3);  // (5-2+1)/2+1
  CHECK(g.OW == 4);  // (6+2-3+1)/2+1 = 4; 3*2 = 6 < 7 kept
}

TEST_CASE("cpu kernels: max pool hand values") {
  const Vec x = {1, 5, 2, 4, 3, 9, 0, 8, 6};  // 1x3x3x1
  Vec y(4);
  std::vector<int32_t> am(4);
  const rz::Pool2dGeom g = rz::make_pool2d_geom(1, 3, 3, 1, 2, 2, 1, 1, 0, 0, false);
  REQUIRE(g.OH == 2);
  rz::max_pool2d_fwd_cpu(x.data(), y.data(), am.data(), g);
  CHECK(y == Vec{5, 9, 8, 9});
  CHECK(am == std::vector<int32_t>{1, 5, 7, 5});
  // k3 s2 p1 on negative values: padding must act as -inf, not 0.
  const Vec xn = {-1, -5, -2, -4, -3, -9, -0.5, -8, -6};
  const rz::Pool2dGeom gp = rz::make_pool2d_geom(1, 3, 3, 1, 3, 3, 2, 2, 1, 1, false);
  REQUIRE(gp.OH == 2);
  rz::max_pool2d_fwd_cpu(xn.data(), y.data(), am.data(), gp);
  CHECK(y == Vec{-1, -2, -0.5, -3});
  CHECK(am == std::vector<int32_t>{0, 2, 6, 4});
  // Ties pick the first in row-major window order; padded windows start at the first real input.
  const Vec flat(9, 7.0);
  rz::max_pool2d_fwd_cpu(flat.data(), y.data(), am.data(), gp);
  CHECK(am == std::vector<int32_t>{0, 1, 3, 4});
  Out dx(9);  // dy = 1, 2, 3, 4 scattered (adding) onto the argmax positions
  const Vec dy = {1, 2, 3, 4};
  rz::max_pool2d_bwd_cpu(dy.data(), am.data(), dx.p(), gp);
  CHECK(dx.vals() == Vec{1, 2, 0, 3, 4, 0, 0, 0, 0});
}

namespace {

// Naive max pool: every window position, padding skipped, strict > keeps the first max.
Vec naive_max_pool(const Vec& x, const rz::Pool2dGeom& g) {
  Vec y(static_cast<size_t>(g.N * g.OH * g.OW * g.C));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t c = 0; c < g.C; ++c) {
          double best = -std::numeric_limits<double>::infinity();
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t h = oh * g.sh - g.ph + i, w = ow * g.sw - g.pw + j;
              if (h >= 0 && h < g.H && w >= 0 && w < g.W)
                best = std::max(best, x[((n * g.H + h) * g.W + w) * g.C + c]);
            }
          y[((n * g.OH + oh) * g.OW + ow) * g.C + c] = best;
        }
  return y;
}

// Naive avg pool: include-pad divisor = window positions inside the padded
// input (h < H + ph), exclude-pad divisor = positions inside the real input.
Vec naive_avg_pool(const Vec& x, const rz::Pool2dGeom& g, bool include_pad) {
  Vec y(static_cast<size_t>(g.N * g.OH * g.OW * g.C));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t c = 0; c < g.C; ++c) {
          double sum = 0;
          int64_t real = 0, padded = 0;
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t h = oh * g.sh - g.ph + i, w = ow * g.sw - g.pw + j;
              if (h < g.H + g.ph && w < g.W + g.pw) ++padded;
              if (h >= 0 && h < g.H && w >= 0 && w < g.W) {
                ++real;
                sum += x[((n * g.H + h) * g.W + w) * g.C + c];
              }
            }
          y[((n * g.OH + oh) * g.OW + ow) * g.C + c] =
              sum / static_cast<double>(include_pad ? padded : real);
        }
  return y;
}

// Geometries with odd sizes, batch 1, stride 2, padding and ceil-mode edges.
std::vector<rz::Pool2dGeom> pool_geoms() {
  return {rz::make_pool2d_geom(2, 7, 5, 3, 3, 3, 2, 2, 1, 1, false),    // stem-like
          rz::make_pool2d_geom(1, 5, 7, 2, 2, 2, 2, 2, 0, 0, true),     // avg_down, 1-row edge
          rz::make_pool2d_geom(1, 6, 6, 3, 3, 3, 2, 2, 1, 1, true),     // edge clipped at H + p
          rz::make_pool2d_geom(2, 5, 5, 1, 3, 2, 2, 1, 1, 0, true),     // unequal k and s
          rz::make_pool2d_geom(1, 4, 3, 67, 2, 2, 2, 2, 1, 1, false)};  // C past one channel block
}

}  // namespace

TEST_CASE("cpu kernels: max pool vs naive and gradient") {
  for (const rz::Pool2dGeom& g : pool_geoms()) {
    const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.OH * g.OW * g.C;
    Vec x(static_cast<size_t>(nx));  // distinct values, 0.01 apart: no ties, FD never flips argmax
    std::iota(x.begin(), x.end(), 0.0);
    std::shuffle(x.begin(), x.end(), std::mt19937_64(6));
    for (double& e : x) e = 0.01 * e - 3.0;
    const Vec w = uniform(ny, -1, 1, 7);
    Vec y(static_cast<size_t>(ny));
    std::vector<int32_t> am(static_cast<size_t>(ny));
    rz::max_pool2d_fwd_cpu(x.data(), y.data(), am.data(), g);
    CHECK(y == naive_max_pool(x, g));
    Out dx(nx);
    rz::max_pool2d_bwd_cpu(w.data(), am.data(), dx.p(), g);
    check_grad(
        x,
        [&] {
          rz::max_pool2d_fwd_cpu(x.data(), y.data(), am.data(), g);
          return dot(w, y);
        },
        dx);
  }
}

TEST_CASE("cpu kernels: avg pool hand values") {
  // 1x5x5x2, k2 s2 ceil: rows/cols {0,1}, {2,3}, {4}. Channel 0 = 5h + w, so
  // y = 5*mean(h) + mean(w) with means 0.5, 2.5, 4; channel 1 = 1 checks divisors.
  Vec x(50);
  for (int h = 0; h < 5; ++h)
    for (int w = 0; w < 5; ++w) {
      x[static_cast<size_t>((h * 5 + w) * 2)] = 5 * h + w;
      x[static_cast<size_t>((h * 5 + w) * 2 + 1)] = 1;
    }
  const rz::Pool2dGeom g = rz::make_pool2d_geom(1, 5, 5, 2, 2, 2, 2, 2, 0, 0, true);
  REQUIRE(g.OH == 3);
  REQUIRE(g.OW == 3);
  const Vec want0 = {3, 5, 6.5, 13, 15, 16.5, 20.5, 22.5, 24};
  for (bool include_pad : {false, true}) {  // no padding: both divisors agree at the edge
    Vec y(18);
    rz::avg_pool2d_fwd_cpu(x.data(), y.data(), g, include_pad);
    for (size_t i = 0; i < 9; ++i) {
      CHECK(y[2 * i] == doctest::Approx(want0[i]));
      CHECK(y[2 * i + 1] == doctest::Approx(1.0));
    }
  }
  // 1x6x6x1 of ones, k3 s2 p1 ceil (OH = 4): real rows per window 2, 3, 3, 1;
  // window rows counted with padding (capped at H + p = 7) 3, 3, 3, 2.
  const Vec ones(36, 1.0);
  const rz::Pool2dGeom g6 = rz::make_pool2d_geom(1, 6, 6, 1, 3, 3, 2, 2, 1, 1, true);
  REQUIRE(g6.OH == 4);
  Vec y(16);
  rz::avg_pool2d_fwd_cpu(ones.data(), y.data(), g6, true);
  CHECK(y[0] == doctest::Approx(4.0 / 9));   // 2x2 of 3x3
  CHECK(y[1] == doctest::Approx(6.0 / 9));   // 2x3 of 3x3
  CHECK(y[3] == doctest::Approx(2.0 / 6));   // 2x1 of 3x2
  CHECK(y[5] == doctest::Approx(1.0));       // interior
  CHECK(y[13] == doctest::Approx(3.0 / 6));  // 1x3 of 2x3
  CHECK(y[15] == doctest::Approx(1.0 / 4));  // 1x1 of 2x2
  rz::avg_pool2d_fwd_cpu(ones.data(), y.data(), g6, false);
  for (double v : y) CHECK(v == doctest::Approx(1.0));
}

TEST_CASE("cpu kernels: avg pool vs naive and gradient") {
  for (const rz::Pool2dGeom& g : pool_geoms())
    for (bool include_pad : {false, true}) {
      const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.OH * g.OW * g.C;
      Vec x = uniform(nx, -1, 1, 8);
      const Vec w = uniform(ny, -1, 1, 9);
      Vec y(static_cast<size_t>(ny));
      rz::avg_pool2d_fwd_cpu(x.data(), y.data(), g, include_pad);
      const Vec want = naive_avg_pool(x, g, include_pad);
      double worst = 0;
      for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - want[i]));
      CHECK(worst < 1e-14);
      Out dx(nx);
      rz::avg_pool2d_bwd_cpu(w.data(), dx.p(), g, include_pad);
      check_grad(
          x,
          [&] {
            rz::avg_pool2d_fwd_cpu(x.data(), y.data(), g, include_pad);
            return dot(w, y);
          },
          dx);
    }
}

TEST_CASE("cpu kernels: global avg pool") {
  const Vec x = {1, 10, 2, 20, 6, 60};  // 1x3x1x2 (HW = 3, C = 2)
  Vec y(2);
  rz::global_avg_pool_fwd_cpu(x.data(), y.data(), 1, 3, 2);
  CHECK(y[0] == doctest::Approx(3.0));
  CHECK(y[1] == doctest::Approx(30.0));
  const int64_t N = 2, HW = 5, C = 67;
  Vec xr = uniform(N * HW * C, -1, 1, 10), yr(static_cast<size_t>(N * C));
  const Vec w = uniform(N * C, -1, 1, 11);
  Out dx(N * HW * C);
  rz::global_avg_pool_bwd_cpu(w.data(), dx.p(), N, HW, C);
  check_grad(
      xr,
      [&] {
        rz::global_avg_pool_fwd_cpu(xr.data(), yr.data(), N, HW, C);
        return dot(w, yr);
      },
      dx);
}

TEST_CASE("cpu kernels: batch norm hand values") {
  // 4x1x1x2: channel 0 = 1, 3, 5, 7 and channel 1 = 10, 8, 12, 6 both have
  // variance 5 (biased; unbiased 20/3); with eps = 4 invstd = 1/3.
  const Vec x = {1, 10, 3, 8, 5, 12, 7, 6};
  const Vec gamma = {2, -1}, beta = {0.5, 1};
  Vec y(8), mean(2), invstd(2), rm = {0, 1}, rv = {1, 2};
  rz::batch_norm_fwd_train_cpu(x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                               invstd.data(), rm.data(), rv.data(), 4, 2, 0.1, 4.0);
  const Vec want = {-1.5, 2.0 / 3, -1.0 / 6, 4.0 / 3, 7.0 / 6, 0, 2.5, 2};
  for (size_t i = 0; i < 8; ++i) CHECK(y[i] == doctest::Approx(want[i]));
  CHECK(mean == Vec{4, 9});
  CHECK(invstd[0] == doctest::Approx(1.0 / 3));
  CHECK(invstd[1] == doctest::Approx(1.0 / 3));
  CHECK(rm[0] == doctest::Approx(0.4));            // 0.9*0 + 0.1*4
  CHECK(rm[1] == doctest::Approx(1.8));            // 0.9*1 + 0.1*9
  CHECK(rv[0] == doctest::Approx(0.9 + 2.0 / 3));  // 0.9*1 + 0.1*20/3
  CHECK(rv[1] == doctest::Approx(1.8 + 2.0 / 3));  // 0.9*2 + 0.1*20/3
  // Eval with running mean (1, 0), var (5, 12), eps 4: invstd (1/3, 1/4).
  const Vec erm = {1, 0}, erv = {5, 12};
  rz::batch_norm_fwd_eval_cpu(x.data(), gamma.data(), beta.data(), erm.data(), erv.data(), y.data(),
                              4, 2, 4.0);
  CHECK(y[0] == doctest::Approx(0.5));   // (1-1)/3*2 + 0.5
  CHECK(y[1] == doctest::Approx(-1.5));  // 10/4*-1 + 1
  CHECK(y[6] == doctest::Approx(4.5));   // (7-1)/3*2 + 0.5
  CHECK(y[7] == doctest::Approx(-0.5));  // 6/4*-1 + 1
}

TEST_CASE("cpu kernels: batch norm running stats and gradients") {
  for (const auto [M, C] :
       {std::array<int64_t, 2>{45, 7}, {9, 3}, {2, 5}}) {  // M = N*H*W, e.g. 3x5x3, 1x3x3
    Vec x = uniform(M * C, -1, 2, 12), gamma = uniform(C, 0.5, 1.5, 13),
        beta = uniform(C, -1, 1, 14);
    const Vec w = uniform(M * C, -1, 1, 15);
    Vec y(x.size()), mean(static_cast<size_t>(C)), invstd(mean.size());
    Vec rm = uniform(C, -1, 1, 16), rv = uniform(C, 0.5, 2, 17);
    const Vec rm0 = rm, rv0 = rv;
    const double eps = 1e-5, mom = 0.1;
    rz::batch_norm_fwd_train_cpu(x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                 invstd.data(), rm.data(), rv.data(), M, C, mom, eps);
    for (int64_t c = 0; c < C; ++c) {  // naive two-pass statistics
      double s = 0, ss = 0;
      for (int64_t r = 0; r < M; ++r) s += x[r * C + c];
      const double mu = s / static_cast<double>(M);
      for (int64_t r = 0; r < M; ++r) ss += (x[r * C + c] - mu) * (x[r * C + c] - mu);
      CHECK(mean[c] == doctest::Approx(mu).epsilon(1e-12));
      CHECK(invstd[c] ==
            doctest::Approx(1 / std::sqrt(ss / static_cast<double>(M) + eps)).epsilon(1e-12));
      CHECK(rm[c] == doctest::Approx(0.9 * rm0[c] + 0.1 * mu).epsilon(1e-12));
      CHECK(rv[c] ==
            doctest::Approx(0.9 * rv0[c] + 0.1 * ss / static_cast<double>(M - 1)).epsilon(1e-12));
    }
    // Training: statistics depend on x.
    Out dx(M * C), dgamma(C), dbeta(C);
    rz::batch_norm_bwd_cpu(x.data(), w.data(), gamma.data(), mean.data(), invstd.data(), dx.p(),
                           dgamma.p(), dbeta.p(), M, C, true);
    const auto train_loss = [&] {
      rz::batch_norm_fwd_train_cpu<double>(x.data(), gamma.data(), beta.data(), y.data(), nullptr,
                                           nullptr, nullptr, nullptr, M, C, mom, eps);
      return dot(w, y);
    };
    check_grad(x, train_loss, dx);
    check_grad(gamma, train_loss, dgamma);
    check_grad(beta, train_loss, dbeta);
    Out dx_only(M * C);  // nullptr dgamma/dbeta give the same dx
    rz::batch_norm_bwd_cpu<double>(x.data(), w.data(), gamma.data(), mean.data(), invstd.data(),
                                   dx_only.p(), nullptr, nullptr, M, C, true);
    CHECK(dx_only.v == dx.v);
    // Eval: running statistics are constants.
    Vec istd_run(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) istd_run[c] = 1 / std::sqrt(rv[c] + eps);
    Out edx(M * C), edgamma(C), edbeta(C);
    rz::batch_norm_bwd_cpu(x.data(), w.data(), gamma.data(), rm.data(), istd_run.data(), edx.p(),
                           edgamma.p(), edbeta.p(), M, C, false);
    const auto eval_loss = [&] {
      rz::batch_norm_fwd_eval_cpu(x.data(), gamma.data(), beta.data(), rm.data(), rv.data(),
                                  y.data(), M, C, eps);
      return dot(w, y);
    };
    check_grad(x, eval_loss, edx);
    check_grad(gamma, eval_loss, edgamma);
    check_grad(beta, eval_loss, edbeta);
  }
}

TEST_CASE("cpu kernels: reductions do not depend on the thread count") {
  const int64_t M = 5003, C = 40;
  const std::vector<float> x = [&] {
    const Vec d = uniform(M * C, -3, 5, 18);
    return std::vector<float>(d.begin(), d.end());
  }();
  const std::vector<float> gamma(C, 1.5f), beta(C, 0.25f);
  const auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> y(x.size()), dx(x.size()), mean(C), invstd(C), dg(C), db(C), gs(C);
    rz::batch_norm_fwd_train_cpu<float>(x.data(), gamma.data(), beta.data(), y.data(), mean.data(),
                                        invstd.data(), nullptr, nullptr, M, C, 0.1, 1e-5);
    rz::batch_norm_bwd_cpu(x.data(), y.data(), gamma.data(), mean.data(), invstd.data(), dx.data(),
                           dg.data(), db.data(), M, C, true);
    rz::global_avg_pool_fwd_cpu(x.data(), gs.data(), 1, M, C);
    const double mse = rz::mse_fwd_cpu(x.data(), y.data(), M * C);
    omp_set_num_threads(before);
    y.insert(y.end(), dx.begin(), dx.end());
    for (const auto* v : {&mean, &invstd, &dg, &db, &gs}) y.insert(y.end(), v->begin(), v->end());
    y.push_back(static_cast<float>(mse));
    return y;
  };
  CHECK(run(1) == run(3));
}

TEST_CASE("cpu kernels: bce with logits values") {
  const auto bce = [](std::vector<double> x, std::vector<double> t, const double* pw) {
    return rz::bce_with_logits_fwd_cpu(x.data(), t.data(), pw, 1, static_cast<int64_t>(x.size()));
  };
  CHECK(bce({0}, {1}, nullptr) == doctest::Approx(kLog2));
  CHECK(bce({0}, {0}, nullptr) == doctest::Approx(kLog2));
  CHECK(bce({100}, {0}, nullptr) == doctest::Approx(100.0));
  CHECK(bce({-100}, {1}, nullptr) == doctest::Approx(100.0));
  CHECK(bce({100}, {1}, nullptr) == doctest::Approx(3.720075976020836e-44).scale(0));  // e^-100
  CHECK(bce({-100}, {0}, nullptr) == doctest::Approx(3.720075976020836e-44).scale(0));
  // Mean over elements: (log 2 + 100 + ~0 + ~0) / 4, and with pos_weight (3, 2, 5, 7) the
  // positive terms scale: (3 log 2 + 100 + 0 + 7*~0) / 4.
  const Vec x = {0, 100, -100, 100}, t = {1, 0, 0, 1}, pw = {3, 2, 5, 7};
  CHECK(rz::bce_with_logits_fwd_cpu<double>(x.data(), t.data(), nullptr, 2, 2) ==
        doctest::Approx((kLog2 + 100) / 4));
  CHECK(rz::bce_with_logits_fwd_cpu(x.data(), t.data(), pw.data(), 1, 4) ==
        doctest::Approx((3 * kLog2 + 100) / 4));
  const double pw3 = 3, pw2 = 2;
  CHECK(bce({0}, {0.5}, &pw3) == doctest::Approx(2 * kLog2));  // -(3*.5*log .5 + .5*log .5)
  CHECK(bce({-100}, {1}, &pw2) == doctest::Approx(200.0));
  const std::vector<float> xf = {1e4f, -1e4f, 100.f, -100.f}, tf = {0.f, 1.f, 0.3f, 0.7f};
  const double lf = rz::bce_with_logits_fwd_cpu<float>(xf.data(), tf.data(), nullptr, 1, 4);
  CHECK(std::isfinite(lf));
  CHECK(lf == doctest::Approx((1e4 + 1e4 + 70 + 70) / 4).epsilon(1e-5));
  // Gradient by hand (rows*L = 1, dloss = 1).
  const auto grad = [](double x1, double t1, const double* p) {
    double g = 0;
    rz::bce_with_logits_bwd_cpu(&x1, &t1, p, 1.0, &g, 1, 1);
    return g;
  };
  CHECK(grad(0, 1, nullptr) == doctest::Approx(-0.5));
  CHECK(grad(0, 1, &pw3) == doctest::Approx(-1.5));
  CHECK(grad(100, 0, nullptr) == doctest::Approx(1.0));
  CHECK(grad(-100, 1, &pw2) == doctest::Approx(-2.0));
  for (double xi : {-30.0, -2.0, 0.3, 5.0})  // pw = 1 reduces to sigmoid(x) - y
    for (double ti : {0.0, 0.4, 1.0})
      CHECK(rz::bce_with_logits_grad(xi, ti, 1.0) ==
            doctest::Approx(1 / (1 + std::exp(-xi)) - ti).scale(1e-9));
}

TEST_CASE("cpu kernels: loss gradients") {
  const int64_t rows = 3, L = 11;
  Vec x = uniform(rows * L, -5, 5, 19);
  const Vec t = uniform(rows * L, 0, 1, 20), pw = uniform(L, 0.5, 3, 21);
  for (const double* p : {static_cast<const double*>(nullptr), pw.data()}) {
    Out dx(rows * L);
    rz::bce_with_logits_bwd_cpu(x.data(), t.data(), p, 0.7, dx.p(), rows, L);
    check_grad(
        x, [&] { return 0.7 * rz::bce_with_logits_fwd_cpu(x.data(), t.data(), p, rows, L); }, dx);
  }
  const Vec a3 = {1, 2, 3}, b3 = {0, 0, 1};
  CHECK(rz::mse_fwd_cpu(a3.data(), b3.data(), 3) == doctest::Approx(3.0));  // (1 + 4 + 4) / 3
  const int64_t n = 41;
  Vec a = uniform(n, -1, 1, 22), b = uniform(n, -1, 1, 23);
  Out da(n), db(n);
  rz::mse_bwd_cpu(a.data(), b.data(), 1.3, da.p(), db.p(), n);
  const auto mse = [&] { return 1.3 * rz::mse_fwd_cpu(a.data(), b.data(), n); };
  check_grad(a, mse, da);
  check_grad(b, mse, db);
  Out db_only(n);
  rz::mse_bwd_cpu<double>(a.data(), b.data(), 1.3, nullptr, db_only.p(), n);
  CHECK(db_only.v == db.v);
}

TEST_CASE("cpu kernels: float instantiations agree with double") {
  const rz::Pool2dGeom g = rz::make_pool2d_geom(2, 7, 5, 6, 3, 3, 2, 2, 1, 1, true);
  const int64_t nx = g.N * g.H * g.W * g.C, ny = g.N * g.OH * g.OW * g.C;
  const Vec xd = uniform(nx, -2, 2, 24);
  const std::vector<float> xf(xd.begin(), xd.end());
  const auto close = [](const std::vector<float>& f, const Vec& d) {
    double worst = 0;
    for (size_t i = 0; i < d.size(); ++i)
      worst = std::max(worst, std::fabs(f[i] - d[i]) / (1 + std::fabs(d[i])));
    return worst < 1e-5;
  };
  std::vector<float> yf(static_cast<size_t>(ny)), yf2(static_cast<size_t>(nx));
  Vec yd(static_cast<size_t>(ny)), yd2(static_cast<size_t>(nx));
  rz::avg_pool2d_fwd_cpu(xf.data(), yf.data(), g, false);
  rz::avg_pool2d_fwd_cpu(xd.data(), yd.data(), g, false);
  CHECK(close(yf, yd));
  rz::avg_pool2d_bwd_cpu(yf.data(), yf2.data(), g, true);
  rz::avg_pool2d_bwd_cpu(yd.data(), yd2.data(), g, true);
  CHECK(close(yf2, yd2));
  std::vector<int32_t> amf(static_cast<size_t>(ny)), amd(amf.size());
  rz::max_pool2d_fwd_cpu(xf.data(), yf.data(), amf.data(), g);
  rz::max_pool2d_fwd_cpu(xd.data(), yd.data(), amd.data(), g);
  CHECK(close(yf, yd));
  CHECK(amf == amd);
  const int64_t M = g.N * g.H * g.W, C = g.C;
  const Vec gd = uniform(C, 0.5, 1.5, 25), bd = uniform(C, -1, 1, 26);
  const std::vector<float> gf(gd.begin(), gd.end()), bf(bd.begin(), bd.end());
  std::vector<float> mf(static_cast<size_t>(C)), sf(mf.size()), dxf(xf.size()), ybn(xf.size());
  Vec md(static_cast<size_t>(C)), sd(md.size()), dxd(xd.size()), ybnd(xd.size());
  rz::batch_norm_fwd_train_cpu<float>(xf.data(), gf.data(), bf.data(), ybn.data(), mf.data(),
                                      sf.data(), nullptr, nullptr, M, C, 0.1, 1e-5);
  rz::batch_norm_fwd_train_cpu<double>(xd.data(), gd.data(), bd.data(), ybnd.data(), md.data(),
                                       sd.data(), nullptr, nullptr, M, C, 0.1, 1e-5);
  CHECK(close(ybn, ybnd));
  rz::batch_norm_bwd_cpu<float>(xf.data(), xf.data(), gf.data(), mf.data(), sf.data(), dxf.data(),
                                nullptr, nullptr, M, C, true);
  rz::batch_norm_bwd_cpu<double>(xd.data(), xd.data(), gd.data(), md.data(), sd.data(), dxd.data(),
                                 nullptr, nullptr, M, C, true);
  CHECK(close(dxf, dxd));
}
