// The CPU forward convolution's two paths — implicit GEMM (C >= 16) and explicit
// im2col + GEMM (fewer channels) — against a direct convolution loop in double:
// strides, padding, rectangular kernels, 1x1, several images, and the BN+ReLU epilogue.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/conv2d.h"

namespace {
struct Case {
  int64_t N, H, W, C, K, R, S, sh, sw, ph, pw;
};

void check_case(const Case& c, bool epilogue, std::mt19937& rng) {
  const rz::Conv2dGeom g = rz::make_conv2d_geom(c.N, c.H, c.W, c.C, c.K, c.R, c.S, c.sh, c.sw, c.ph, c.pw);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(c.N * c.H * c.W * c.C)), w(static_cast<size_t>(c.K * c.R * c.S * c.C));
  for (auto& v : x) v = d(rng);
  for (auto& v : w) v = d(rng);
  std::vector<float> scale(static_cast<size_t>(c.K)), shift(static_cast<size_t>(c.K));
  for (auto& v : scale) v = d(rng);
  for (auto& v : shift) v = d(rng);
  const rz::GemmEpilogue<float> ep{scale.data(), shift.data(), true};
  std::vector<float> y(static_cast<size_t>(c.N * g.OH * g.OW * c.K), 12345.f);
  rz::conv2d_fwd_cpu(x.data(), w.data(), y.data(), g, epilogue ? &ep : nullptr);
  double worst = 0;
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t k = 0; k < c.K; ++k) {
          double acc = 0, mag = 0;
          for (int64_t r = 0; r < c.R; ++r)
            for (int64_t s = 0; s < c.S; ++s) {
              const int64_t ih = oh * c.sh - c.ph + r, iw = ow * c.sw - c.pw + s;
              if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
              for (int64_t ci = 0; ci < c.C; ++ci) {
                const double p = double(x[static_cast<size_t>(((n * c.H + ih) * c.W + iw) * c.C + ci)]) *
                                 double(w[static_cast<size_t>(((k * c.R + r) * c.S + s) * c.C + ci)]);
                acc += p;
                mag += std::abs(p);
              }
            }
          double want = acc;
          if (epilogue) {
            want = std::max(acc * double(scale[static_cast<size_t>(k)]) + double(shift[static_cast<size_t>(k)]), 0.0);
            mag *= std::abs(double(scale[static_cast<size_t>(k)]));
          }
          const double got = y[static_cast<size_t>(((n * g.OH + oh) * g.OW + ow) * c.K + k)];
          worst = std::max(worst, std::abs(got - want) / (1e-5 * (mag + 1.0)));
        }
  CHECK(worst <= 1.0);
}
}  // namespace

TEST_CASE("cpu conv forward: implicit and explicit im2col paths match a direct loop") {
  std::mt19937 rng(5);
  const Case cases[] = {
      {2, 9, 7, 3, 5, 3, 3, 1, 1, 1, 1},    // stem-like, explicit path
      {1, 10, 11, 8, 33, 3, 3, 2, 2, 1, 1},  // explicit, stride 2
      {2, 9, 7, 16, 20, 3, 3, 1, 1, 1, 1},  // implicit, the threshold
      {1, 12, 10, 40, 17, 3, 3, 2, 1, 1, 0},  // implicit, mixed strides, asymmetric padding
      {2, 6, 6, 24, 9, 1, 3, 1, 1, 0, 1},   // implicit, 1x3 kernel
      {1, 5, 5, 70, 31, 5, 5, 1, 1, 2, 2},  // implicit, 5x5: 25 taps
      {3, 4, 4, 1100, 6, 3, 3, 1, 1, 1, 1},  // implicit, taps > KC: rows split across K blocks
      {2, 7, 5, 12, 14, 1, 1, 1, 1, 0, 0},  // pointwise
  };
  for (const Case& c : cases) {
    for (const bool ep : {false, true}) {
      CAPTURE(c.C);
      CAPTURE(c.R);
      CAPTURE(ep);
      check_case(c, ep, rng);
    }
  }
}
