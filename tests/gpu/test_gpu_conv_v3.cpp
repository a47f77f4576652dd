// What only the Hopper native convolution v3 (kernels/cuda/conv_native_v3.cuh)
// needs checked beyond tests/gpu/test_gpu_conv_native.cpp (which runs every
// variant, v3 included, in every pass on every seresnet152d shape and the
// odd shapes, and the fused forward through conv2d_fwd_native_fused): the
// raw launcher's Fwd epilogue (affine + ReLU against the same formula on the
// CPU reference, its per-M-tile statistics partials against sums of the
// stored outputs), its refusals, and bitwise reproducible split-K Wgrad.
// Skips (one line) without a GPU, on devices other than compute capability
// 9.x, and in builds without sm_90 code (the launcher then refuses).
#include "tests/gpu/gpu_test.h"

#if defined(RZ_HAVE_CUDA)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/common/conv_epilogue.h"
#include "kernels/common/conv_wgmma.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cuda/conv_native.cuh"
#include "kernels/cuda/conv_native_v3.cuh"
#include "models/conv_shapes.h"
#include "models/seresnet.h"
#include "tests/gpu/gpu_conv_cases.h"
#include "tests/gpu/gpu_guard.h"
#include "tests/gpu/gpu_vec.h"
#endif

using namespace rz;

#if defined(RZ_HAVE_CUDA)
namespace {

using gpu_test::Guarded;
using gpu_test::random_vec;
using gpu_test::to_bf16;
using gpu_test::to_f32;

using gpu_test::ConvCase;
using gpu_test::cpu_pass;
using gpu_test::out_elems;
using Case = ConvCase;

// The cases v3 supports (C % 8 == 0: all but the stem's first conv).
std::vector<Case> v3_cases() {
  std::vector<Case> cases;
  for (const Case& c : gpu_test::seresnet152d_conv_cases())
    if (igemm::v3_geometry_ok(ConvPass::Fwd, c.g)) cases.push_back(c);
  const int64_t odd[][11] = {
      {2, 13, 11, 8, 136, 7, 7, 2, 2, 3, 3},  // 7x7 s2, two N tiles
      {3, 17, 15, 24, 40, 3, 3, 2, 2, 1, 1},  // odd spatial, stride 2
      {2, 12, 12, 136, 8, 3, 3, 1, 1, 1, 1},  // two N tiles in dgrad
      {2, 8, 9, 16, 24, 3, 3, 2, 2, 0, 0},    // stride 2, no padding
  };
  gpu_test::add_odd_cases(cases, odd);
  return cases;
}

// Whether this process can run v3 at all; prints the skip line when not.
// v3 runs on compute capability 9.x with sm_90a code in the build. On such a
// device a build without that code fails the test; elsewhere the test skips.
bool v3_runnable() {
  if (conv_native_available(ConvVariant::V3)) return true;
  int dev = 0, major = 0;
  RZ_CUDA_CHECK(cudaGetDevice(&dev));
  RZ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CHECK_MESSAGE(major != 9, "a Hopper device, but this build has no sm_90a code for native conv v3");
  ::rz::test::skip("v3 needs a compute capability 9.x device");
  return false;
}

double nmse(const std::vector<double>& got, const std::vector<double>& ref, bool* finite) {
  double num = 0, den = 0;
  *finite = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    *finite = *finite && std::isfinite(got[i]);
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

std::vector<double> widen(const std::vector<bf16>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

}  // namespace
#endif

TEST_SUITE("gpu") {
#if defined(RZ_HAVE_CUDA)
  TEST_CASE("gpu: native conv v3 fwd epilogue: affine, relu, per-M-tile statistics") {
    RZ_SKIP_WITHOUT_GPU();
    if (!v3_runnable()) return;
    Generator gen(42);
    const std::vector<Case> all = v3_cases();
    const Case picks[] = {all[0], all[2], all[all.size() / 2], all[all.size() - 3]};
    for (const Case& c : picks) {
      const Conv2dGeom& g = c.g;
      CAPTURE(c.what);
      const int64_t M = g.N * g.OH * g.OW, K = g.K;
      const int64_t tiles = (M + igemm::kV3BM - 1) / igemm::kV3BM;
      const std::vector<bf16> x = to_bf16(random_vec(g.N * g.H * g.W * g.C, gen));
      const std::vector<bf16> w = to_bf16(random_vec(g.K * g.R * g.S * g.C, gen));
      const std::vector<float> scale = random_vec(K, gen, 0.5, 2.0),
                               shift = random_vec(K, gen, -0.5, 0.5);
      Guarded<bf16> dx(x), dw(w);
      Guarded<float> dscale(scale), dshift(shift);
      const std::vector<float> ref =
          cpu_pass(ConvPass::Fwd, g, to_f32(x), to_f32(w), std::vector<float>());
      for (int variant = 0; variant < 2; ++variant) {
        CAPTURE(variant);
        Guarded<float> stats(std::vector<float>(static_cast<size_t>(tiles * 2 * K),
                                                std::numeric_limits<float>::quiet_NaN()));
        Guarded<bf16> y(M * K);
        ConvFwdEpilogue ep;
        if (variant == 0) {
          ep.scale = dscale.get();
          ep.shift = dshift.get();
          ep.relu = true;
        }
        ep.stats = stats.get();
        const cudaError_t err =
            detail::conv_native_v3(ConvPass::Fwd, g, dx.get(), dw.get(), y.get(), ep, nullptr);
        REQUIRE_MESSAGE(err == cudaSuccess, cudaGetErrorString(err));
        const std::vector<double> got = widen(y.read());
        std::vector<double> want(ref.size());
        for (size_t i = 0; i < ref.size(); ++i) {
          const int k = static_cast<int>(i % static_cast<size_t>(K));
          want[i] = conv_epilogue_value(ref[i], variant == 0 ? scale.data() : nullptr,
                                        variant == 0 ? shift.data() : nullptr, variant == 0, k);
        }
        bool finite = true;
        CHECK(nmse(got, want, &finite) <= 1e-4);
        CHECK(finite);
        const std::vector<float> st = stats.read();
        int64_t bad = 0;
        for (int64_t t = 0; t < tiles; ++t)
          for (int64_t k = 0; k < K; ++k) {
            double s1 = 0, s2 = 0, s2abs = 0;
            for (int64_t m = t * igemm::kV3BM; m < std::min(M, (t + 1) * igemm::kV3BM); ++m) {
              const double v = got[static_cast<size_t>(m * K + k)];
              s1 += v;
              s2 += v * v;
              s2abs += std::fabs(v);
            }
            const double g1 = st[static_cast<size_t>((t * 2 + 0) * K + k)];
            const double g2 = st[static_cast<size_t>((t * 2 + 1) * K + k)];
            if (!(std::fabs(g1 - s1) <= 1e-5 * (1 + s2abs)) ||
                !(std::fabs(g2 - s2) <= 1e-5 * (1 + s2)))
              ++bad;
          }
        CHECK(bad == 0);
      }
    }
  }

  TEST_CASE("gpu: native conv v3 refuses what it does not support; split-K wgrad is reproducible") {
    RZ_SKIP_WITHOUT_GPU();
    if (!v3_runnable()) return;
    const Conv2dGeom g = make_conv2d_geom(2, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1);
    const Conv2dGeom c3 = make_conv2d_geom(2, 16, 16, 3, 32, 3, 3, 2, 2, 1, 1);
    Generator gen(43);
    Guarded<bf16> x(to_bf16(random_vec(g.N * g.H * g.W * g.C, gen)));
    Guarded<bf16> w(to_bf16(random_vec(g.K * g.R * g.S * g.C, gen)));
    Guarded<bf16> dy(to_bf16(random_vec(g.N * g.OH * g.OW * g.K, gen)));
    Guarded<bf16> y(g.N * g.OH * g.OW * g.K), dx(g.N * g.H * g.W * g.C);
    ConvFwdEpilogue relu;
    relu.relu = true;
    CHECK(detail::conv_native_v3(ConvPass::Fwd, c3, x.get(), w.get(), y.get(), {}, nullptr) ==
          cudaErrorInvalidValue);  // C % 8 != 0
    CHECK(detail::conv_native_v3(ConvPass::Fwd, g, x.get() + 1, w.get(), y.get(), {}, nullptr) ==
          cudaErrorInvalidValue);  // 16-byte alignment
    CHECK(detail::conv_native_v3(ConvPass::Dgrad, g, dy.get(), w.get(), dx.get(), relu, nullptr) ==
          cudaErrorInvalidValue);  // no epilogue outside Fwd
    (void)y.read();
    (void)dx.read();

    Guarded<bf16> dw1(g.K * g.R * g.S * g.C), dw2(g.K * g.R * g.S * g.C);
    REQUIRE(detail::conv_native_v3(ConvPass::Wgrad, g, dy.get(), x.get(), dw1.get(), {}, nullptr) ==
            cudaSuccess);
    REQUIRE(detail::conv_native_v3(ConvPass::Wgrad, g, dy.get(), x.get(), dw2.get(), {}, nullptr) ==
            cudaSuccess);
    const std::vector<bf16> a = dw1.read(), b = dw2.read();
    bool same = true;
    for (size_t i = 0; i < a.size(); ++i) same = same && a[i].bits == b[i].bits;
    CHECK(same);
  }
#endif
}
