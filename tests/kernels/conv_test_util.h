// Shared by the CPU tests of the native convolutions' index logic
// (tests/kernels/test_conv_igemm*.cpp): test geometries, small-integer
// tensors whose sums are exact in fp32, the CPU-twin references, im2col and
// the naive Dgrad gather written from its definition.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"

namespace rz::conv_test {

using namespace rz::igemm;

struct ConvCase {
  int64_t N, H, W, C, K, R, S, sh, sw, ph, pw;
};

// "N2 H9 W7 C5 K6 R3x3 s1 p1": a case for test messages.
inline std::string case_name(const ConvCase& s) {
  return "N" + std::to_string(s.N) + " H" + std::to_string(s.H) + " W" + std::to_string(s.W) +
         " C" + std::to_string(s.C) + " K" + std::to_string(s.K) + " R" + std::to_string(s.R) +
         "x" + std::to_string(s.S) + " s" + std::to_string(s.sh) + " p" + std::to_string(s.ph);
}

inline Conv2dGeom geom_of(const ConvCase& s) {
  return make_conv2d_geom(s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
}

inline IgemmGeom igemm_of(const Conv2dGeom& g) {
  IgemmGeom ig;
  REQUIRE(make_igemm_geom(g, &ig));
  return ig;
}

// Any geometry (v1): odd sizes, C not a multiple of 8, stride 2, padding,
// 1x1 / 3x3 / 7x7, several tiles along M, N and K.
inline constexpr ConvCase kAnyShapes[] = {
    {2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1},     // 3x3 s1 p1, odd everything
    {2, 11, 13, 7, 9, 3, 3, 2, 2, 1, 1},   // 3x3 s2 p1
    {1, 23, 19, 3, 8, 7, 7, 2, 2, 3, 3},   // 7x7 s2 p3, C = 3 (a stem)
    {3, 10, 10, 9, 4, 1, 1, 2, 2, 0, 0},   // 1x1 s2 (strided shortcut)
    {2, 12, 10, 9, 70, 3, 3, 1, 1, 1, 1},  // M = 240, N = 70: several tiles
    {1, 5, 5, 1, 1, 3, 3, 1, 1, 0, 0},     // one channel in and out, no padding
    {2, 8, 9, 3, 5, 3, 3, 2, 2, 0, 0},     // stride 2 without padding (dropped edge)
    {1, 6, 6, 13, 67, 3, 1, 2, 1, 1, 0},   // non-square kernel and stride
};

// v2 geometries (C % 8 == 0, K % 8 == 0): odd spatial sizes, stride 2,
// 1x1 / 3x3 / 7x7, M and N past one 128 tile or short of one 64 tile,
// reductions past one k-tile. Every configuration runs every shape.
inline constexpr ConvCase kVecShapes[] = {
    {2, 9, 7, 16, 24, 3, 3, 1, 1, 1, 1},      // 3x3 s1 p1
    {2, 11, 13, 8, 16, 3, 3, 2, 2, 1, 1},     // 3x3 s2 p1, C = 8
    {1, 13, 11, 8, 136, 7, 7, 2, 2, 3, 3},    // 7x7 s2 p3, two N tiles (Fwd)
    {3, 10, 10, 32, 8, 1, 1, 2, 2, 0, 0},     // 1x1 s2
    {2, 12, 12, 40, 48, 1, 1, 1, 1, 0, 0},    // 1x1 s1: M = 288, three M tiles
    {1, 7, 7, 136, 8, 3, 3, 1, 1, 1, 1},      // C = 136: two N tiles in Dgrad
    {2, 6, 7, 16, 16, 3, 3, 2, 2, 0, 0},      // stride 2 without padding
    {2, 1, 1, 64, 8, 1, 1, 1, 1, 0, 0},       // an SE fc on a 1x1 map
    {1, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1},    // seresnet152d layer1 conv2 (at 64x64 input)
    {1, 16, 16, 128, 128, 3, 3, 2, 2, 1, 1},  // seresnet152d layer2.0 conv2 (stride 2)
    {1, 8, 8, 256, 64, 1, 1, 1, 1, 0, 0},     // a bottleneck conv1
    {1, 7, 7, 72, 200, 3, 3, 2, 2, 1, 1},     // Fwd M = 16 <= 64 < N = 200 (64 x 128 tiles)
};

// Small integers: every product and sum of the test sizes is exact in fp32.
inline std::vector<double> random_ints(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-3, 3);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}

struct Tensors {
  std::vector<double> x, w, dy;
};

inline Tensors random_tensors(const Conv2dGeom& g, std::mt19937& rng) {
  return {random_ints(g.N * g.H * g.W * g.C, rng), random_ints(g.K * g.R * g.S * g.C, rng),
          random_ints(g.N * g.OH * g.OW * g.K, rng)};
}

// The pass's reference output from the CPU twins, and its A and B tensors.
inline std::vector<double> reference(ConvPass p, const Conv2dGeom& g, const Tensors& t) {
  std::vector<double> out;
  if (p == ConvPass::Fwd) {
    out.resize(static_cast<size_t>(g.N * g.OH * g.OW * g.K));
    conv2d_fwd_cpu(t.x.data(), t.w.data(), out.data(), g);
  } else if (p == ConvPass::Dgrad) {
    out.resize(t.x.size());
    conv2d_bwd_data_cpu(t.dy.data(), t.w.data(), out.data(), g);
  } else {
    out.resize(t.w.size());
    conv2d_bwd_weight_cpu(t.x.data(), t.dy.data(), out.data(), g);
  }
  return out;
}
inline const std::vector<double>& a_tensor(ConvPass p, const Tensors& t) {
  return p == ConvPass::Fwd ? t.x : t.dy;
}
inline const std::vector<double>& b_tensor(ConvPass p, const Tensors& t) {
  return p == ConvPass::Wgrad ? t.x : t.w;
}

inline std::vector<double> im2col(const Conv2dGeom& g, const std::vector<double>& x) {
  std::vector<double> col(static_cast<size_t>(g.rows() * g.taps()));
  im2col_cpu(x.data(), col.data(), g, 0, g.N);
  return col;
}

inline const char* pass_name(ConvPass p) {
  return p == ConvPass::Fwd ? "fwd" : (p == ConvPass::Dgrad ? "dgrad" : "wgrad");
}

// Dgrad's A operand written directly from its definition: the dy element that
// input pixel (n, h, w) receives through tap (r, s), or 0.
inline double naive_dgrad_a(const Conv2dGeom& g, const std::vector<double>& dy, int64_t m, int64_t k) {
  const int64_t w = m % g.W, h = (m / g.W) % g.H, n = m / (g.W * g.H);
  const int64_t kk = k % g.K, s = (k / g.K) % g.S, r = k / (g.K * g.S);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow)
      if (oh * g.sh - g.ph + r == h && ow * g.sw - g.pw + s == w)
        return dy[static_cast<size_t>(((n * g.OH + oh) * g.OW + ow) * g.K + kk)];
  return 0.0;
}

}  // namespace rz::conv_test
