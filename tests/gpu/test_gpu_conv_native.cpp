// Native convolutions (kernels/cuda/conv_native.cuh) against the CPU twins
// (kernels/cpu/conv2d.h): every variant x pass (fwd, dgrad, wgrad) x storage
// type (fp32, bf16) that conv2d_native_supported admits, on every distinct
// convolution of seresnet152d at batch 2 and 64x64 input (models/conv_shapes.h,
// SE fcs included) plus odd shapes (C, K not multiples of 8, stride 2 without
// padding, 7x7, non-square kernels). Outputs sit between 0xA5 sentinel guards
// and start as 0xA5 garbage, so every element must be written and nothing
// outside. Tolerances:
//   fp32: |gpu - ref| <= 1e-4 * (sum of |terms|), ref in double;
//   bf16: normalized MSE <= 1e-4 against the CPU twin in fp32 on the
//         bf16-rounded inputs (bf16 output rounding alone is about 1e-6).
// Also: V1 supports every geometry; unsupported combinations and misaligned
// V2 pointers return cudaErrorInvalidValue; split-K wgrad is bitwise
// reproducible.
#include "tests/gpu/gpu_test.h"

#if defined(RZ_HAVE_CUDA)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cuda/conv_native.cuh"
#include "models/conv_shapes.h"
#include "models/seresnet.h"
#include "tests/gpu/gpu_conv_cases.h"
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

using gpu_test::ConvCase;
using gpu_test::cpu_pass;
using gpu_test::out_elems;
using gpu_test::pass_name;
using Case = ConvCase;

std::vector<Case> conv_cases() {
  std::vector<Case> cases = gpu_test::seresnet152d_conv_cases();
  const int64_t odd[][11] = {
      {2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1},      // odd everything
      {2, 11, 13, 7, 9, 3, 3, 2, 2, 1, 1},    // stride 2
      {1, 23, 19, 3, 8, 7, 7, 2, 2, 3, 3},    // 7x7 stem-like, C = 3
      {3, 10, 10, 9, 4, 1, 1, 2, 2, 0, 0},    // strided 1x1
      {2, 8, 9, 3, 5, 3, 3, 2, 2, 0, 0},      // stride 2, no padding
      {1, 6, 6, 13, 67, 3, 1, 2, 1, 1, 0},    // non-square kernel / stride
      {1, 5, 5, 1, 1, 3, 3, 1, 1, 0, 0},      // one channel
      {2, 13, 11, 8, 136, 7, 7, 2, 2, 3, 3},  // v2: two N tiles, 7x7
      {3, 17, 15, 24, 40, 3, 3, 2, 2, 1, 1},  // v2: odd spatial, stride 2
      {2, 12, 12, 136, 8, 3, 3, 1, 1, 1, 1},  // v2: two N tiles in dgrad
      {1, 7, 7, 72, 200, 3, 3, 2, 2, 1, 1},   // v2 64x128 tiles: M, N overhang (fwd, dgrad)
      {2, 9, 9, 64, 64, 3, 3, 1, 1, 1, 1},    // v2 128x64: M overhang; wgrad 64x128: N overhang
  };
  gpu_test::add_odd_cases(cases, odd);
  return cases;
}

template <typename T>
cudaError_t run_native(ConvVariant v, ConvPass p, const Conv2dGeom& g, const T* x, const T* w,
                       const T* dy, T* out, cudaStream_t stream) {
  if (p == ConvPass::Fwd) return conv2d_fwd_native<T>(v, g, x, w, out, stream);
  if (p == ConvPass::Dgrad) return conv2d_bwd_data_native<T>(v, g, dy, w, out, stream);
  return conv2d_bwd_filter_native<T>(v, g, x, dy, out, stream);
}

template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, bf16>)
      out[i] = bf16_to_f32(v[i]);
    else
      out[i] = static_cast<double>(v[i]);
  }
  return out;
}

// A variant this device or build cannot run at all (v3 off Hopper or
// without sm_90a code) refuses every call; the loops below skip it. Where it
// is available every supported call must succeed.
bool refused_here(ConvVariant v, cudaError_t err) {
  if (err != cudaErrorInvalidValue || conv_native_available(v)) return false;
  static bool said[4] = {};
  const int i = static_cast<int>(v) & 3;
  if (!said[i]) std::printf("[gpu] %s is not available on this device/build: skipped\n", conv_variant_name(v));
  said[i] = true;
  return true;
}

template <typename T>
std::vector<T> storage_of(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, bf16>)
    return to_bf16(v);
  else
    return v;
}

// Runs every supported (variant, pass) of storage type T on every case and
// checks it; returns the number of combinations run.
template <typename T>
int64_t check_all(uint64_t seed) {
  Generator gen(seed);
  cudaStream_t stream = nullptr;
  RZ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int64_t ran = 0;
  for (const Case& c : conv_cases()) {
    const Conv2dGeom& g = c.g;
    CAPTURE(c.what);
    CAPTURE(g.N);
    CAPTURE(g.H);
    CAPTURE(g.W);
    CAPTURE(g.C);
    CAPTURE(g.K);
    CAPTURE(g.R);
    CAPTURE(g.S);
    CAPTURE(g.sh);
    CAPTURE(g.sw);
    CAPTURE(g.ph);
    CAPTURE(g.pw);
    const std::vector<T> x = storage_of<T>(random_vec(g.N * g.H * g.W * g.C, gen));
    const std::vector<T> w = storage_of<T>(random_vec(g.K * g.R * g.S * g.C, gen));
    const std::vector<T> dy = storage_of<T>(random_vec(g.N * g.OH * g.OW * g.K, gen));
    Guarded<T> dx_in(x), dw_in(w), ddy(dy);
    const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy);
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      // References: fp32 storage -> double with the |terms| bound; bf16 ->
      // the fp32 twin on the (already rounded) inputs.
      std::vector<double> ref, bound;
      if constexpr (std::is_same_v<T, bf16>) {
        std::vector<float> xf(xd.begin(), xd.end()), wf(wd.begin(), wd.end()),
            dyf(dyd.begin(), dyd.end());
        const std::vector<float> r = cpu_pass<float>(p, g, xf, wf, dyf);
        ref.assign(r.begin(), r.end());
      } else {
        ref = cpu_pass<double>(p, g, xd, wd, dyd);
        auto absv = [](std::vector<double> v) {
          for (double& e : v) e = std::fabs(e);
          return v;
        };
        bound = cpu_pass<double>(p, g, absv(xd), absv(wd), absv(dyd));
      }
      for (ConvVariant v : kConvVariants) {
        CAPTURE(conv_variant_name(v));
        const bool supported = conv2d_native_supported<T>(v, p, g);
        if (v == ConvVariant::V1) CHECK(supported);
        Guarded<T> out(out_elems(p, g));  // 0xA5 garbage: every element must be written
        const cudaError_t err =
            run_native<T>(v, p, g, dx_in.get(), dw_in.get(), ddy.get(), out.get(), stream);
        if (!supported) {
          CHECK(err == cudaErrorInvalidValue);
          continue;
        }
        if (refused_here(v, err)) continue;
        REQUIRE_MESSAGE(err == cudaSuccess, cudaGetErrorString(err));
        RZ_CUDA_CHECK(cudaStreamSynchronize(stream));
        const std::vector<double> got = widen(out.read());
        ++ran;
        if constexpr (std::is_same_v<T, bf16>) {
          double num = 0, den = 0;
          bool finite = true;
          for (size_t i = 0; i < ref.size(); ++i) {
            finite = finite && std::isfinite(got[i]);
            num += (got[i] - ref[i]) * (got[i] - ref[i]);
            den += ref[i] * ref[i];
          }
          CHECK(finite);
          CHECK((den > 0 ? num / den : num) <= 1e-4);
        } else {
          int64_t bad = 0, first = -1;
          for (size_t i = 0; i < ref.size(); ++i)
            if (!(std::fabs(got[i] - ref[i]) <= 1e-4 * bound[i] + 1e-30)) {
              if (first < 0) first = static_cast<int64_t>(i);
              ++bad;
            }
          if (bad > 0) {
            const size_t i = static_cast<size_t>(first);
            MESSAGE("first mismatch at ", first, ": got ", got[i], ", want ", ref[i], " (bound ",
                    bound[i], ")");
          }
          CHECK(bad == 0);
        }
      }
    }
  }
  RZ_CUDA_CHECK(cudaStreamDestroy(stream));
  return ran;
}

// The fused forward (conv2d_fwd_native_fused): every variant that runs Fwd,
// on every case, storage T. Per case one of three epilogues: statistics
// only; folded BN + ReLU + statistics; folded BN + statistics. y is checked
// against the CPU convolution with the epilogue applied in double (the same
// tolerances as check_all, the fp32 bound scaled by |scale|); the sums
// against double sums of the y the GPU stored (they are sums of exactly
// those values: fp32 tile partials allow 1e-5 of the sum of magnitudes); a
// second run must give bitwise the same sums.
template <typename T>
int64_t check_fused(uint64_t seed) {
  Generator gen(seed);
  cudaStream_t stream = nullptr;
  RZ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int64_t ran = 0, index = 0;
  for (const Case& c : conv_cases()) {
    const Conv2dGeom& g = c.g;
    const int mode = static_cast<int>(index++ % 3);
    CAPTURE(c.what);
    CAPTURE(mode);
    const bool affine = mode != 0, relu = mode == 1;
    const int64_t M = g.N * g.OH * g.OW, K = g.K;
    const std::vector<T> x = storage_of<T>(random_vec(g.N * g.H * g.W * g.C, gen));
    const std::vector<T> w = storage_of<T>(random_vec(g.K * g.R * g.S * g.C, gen));
    const std::vector<float> scale = random_vec(K, 0.5, 1.5, gen), shift = random_vec(K, gen);
    Guarded<T> dx(x), dw(w);
    Guarded<float> dscale(scale), dshift(shift);
    const std::vector<double> xd = widen(x), wd = widen(w);
    std::vector<double> ref, bound;
    if constexpr (std::is_same_v<T, bf16>) {
      std::vector<float> xf(xd.begin(), xd.end()), wf(wd.begin(), wd.end());
      const std::vector<float> r = cpu_pass<float>(ConvPass::Fwd, g, xf, wf, {});
      ref.assign(r.begin(), r.end());
    } else {
      ref = cpu_pass<double>(ConvPass::Fwd, g, xd, wd, {});
      auto absv = [](std::vector<double> v) {
        for (double& e : v) e = std::fabs(e);
        return v;
      };
      bound = cpu_pass<double>(ConvPass::Fwd, g, absv(xd), absv(wd), {});
    }
    for (size_t i = 0; i < ref.size(); ++i) {
      const size_t k = i % static_cast<size_t>(K);
      if (affine) {
        ref[i] = ref[i] * scale[k] + shift[k];
        if (!bound.empty()) bound[i] = bound[i] * scale[k] + std::fabs(shift[k]);
      }
      if (relu && ref[i] < 0) ref[i] = 0;
    }
    for (ConvVariant v : kConvVariants) {
      if (!conv2d_native_supported<T>(v, ConvPass::Fwd, g)) continue;
      CAPTURE(conv_variant_name(v));
      Guarded<T> y(M * K);
      Guarded<double> sums(2 * K), sums2(2 * K);
      ConvFwdFusion f;
      if (affine) f.scale = dscale.get(), f.shift = dshift.get();
      f.relu = relu;
      f.sums = sums.get();
      cudaError_t err = conv2d_fwd_native_fused<T>(v, g, dx.get(), dw.get(), y.get(), f, stream);
      if (refused_here(v, err)) continue;
      REQUIRE_MESSAGE(err == cudaSuccess, cudaGetErrorString(err));
      f.sums = sums2.get();
      err = conv2d_fwd_native_fused<T>(v, g, dx.get(), dw.get(), y.get(), f, stream);
      REQUIRE_MESSAGE(err == cudaSuccess, cudaGetErrorString(err));
      RZ_CUDA_CHECK(cudaStreamSynchronize(stream));
      ++ran;
      const std::vector<double> got = widen(y.read());
      if constexpr (std::is_same_v<T, bf16>) {
        double num = 0, den = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
          num += (got[i] - ref[i]) * (got[i] - ref[i]);
          den += ref[i] * ref[i];
        }
        CHECK((den > 0 ? num / den : num) <= 1e-4);
      } else {
        int64_t bad = 0;
        for (size_t i = 0; i < ref.size(); ++i)
          if (!(std::fabs(got[i] - ref[i]) <= 1e-4 * bound[i] + 1e-30)) ++bad;
        CHECK(bad == 0);
      }
      std::vector<double> want(static_cast<size_t>(2 * K), 0.0), mag(static_cast<size_t>(2 * K), 0.0);
      for (size_t i = 0; i < got.size(); ++i) {
        const size_t k = i % static_cast<size_t>(K);
        want[k] += got[i];
        mag[k] += std::fabs(got[i]);
        want[static_cast<size_t>(K) + k] += got[i] * got[i];
        mag[static_cast<size_t>(K) + k] += got[i] * got[i];
      }
      const std::vector<double> s1 = sums.read(), s2 = sums2.read();
      int64_t bad = 0;
      for (size_t k = 0; k < want.size(); ++k)
        if (!(std::fabs(s1[k] - want[k]) <= 1e-5 * mag[k] + 1e-30)) ++bad;
      CHECK(bad == 0);
      CHECK(s1 == s2);
    }
  }
  RZ_CUDA_CHECK(cudaStreamDestroy(stream));
  return ran;
}

}  // namespace
#endif

TEST_SUITE("gpu") {
#if defined(RZ_HAVE_CUDA)
  TEST_CASE("gpu: native conv fp32, every variant and pass, match the CPU twins") {
    RZ_SKIP_WITHOUT_GPU();
    const int64_t ran = check_all<float>(31);
    MESSAGE("fp32 native conv combinations run: ", ran);
    CHECK(ran > 0);
  }

  TEST_CASE("gpu: native conv bf16, every variant and pass, match the CPU twins (normalized MSE)") {
    RZ_SKIP_WITHOUT_GPU();
    const int64_t ran = check_all<bf16>(32);
    MESSAGE("bf16 native conv combinations run: ", ran);
    CHECK(ran > 0);
  }

  TEST_CASE("gpu: fused native conv forward (folded BN, ReLU, BN statistics) matches the CPU") {
    RZ_SKIP_WITHOUT_GPU();
    const int64_t ran = check_fused<float>(34) + check_fused<bf16>(35);
    MESSAGE("fused native conv combinations run: ", ran);
    CHECK(ran > 0);
  }

  TEST_CASE("gpu: native conv rejects what a variant does not support, and wgrad is reproducible") {
    RZ_SKIP_WITHOUT_GPU();
    const Conv2dGeom g = make_conv2d_geom(2, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1);
    const Conv2dGeom c3 = make_conv2d_geom(2, 16, 16, 3, 32, 3, 3, 2, 2, 1, 1);
    Generator gen(33);
    Guarded<bf16> x(to_bf16(random_vec(g.N * g.H * g.W * g.C, gen)));
    Guarded<bf16> w(to_bf16(random_vec(g.K * g.R * g.S * g.C, gen)));
    Guarded<bf16> dy(to_bf16(random_vec(g.N * g.OH * g.OW * g.K, gen)));
    Guarded<bf16> y(g.N * g.OH * g.OW * g.K);
    Guarded<float> xf(g.N * g.H * g.W * g.C), wf(g.K * g.R * g.S * g.C),
        yf(g.N * g.OH * g.OW * g.K);

    CHECK(!conv2d_native_supported<float>(ConvVariant::V2, ConvPass::Fwd, g));
    CHECK(conv2d_native_supported<bf16>(ConvVariant::V2, ConvPass::Fwd, g));
    CHECK(!conv2d_native_supported<bf16>(ConvVariant::V2, ConvPass::Fwd, c3));
    CHECK(conv2d_native_supported<bf16>(ConvVariant::V1, ConvPass::Wgrad, c3));
    CHECK(conv2d_fwd_native<float>(ConvVariant::V2, g, xf.get(), wf.get(), yf.get(), nullptr) ==
          cudaErrorInvalidValue);
    CHECK(conv2d_fwd_native<bf16>(ConvVariant::V2, c3, x.get(), w.get(), y.get(), nullptr) ==
          cudaErrorInvalidValue);
    CHECK(conv2d_fwd_native<bf16>(ConvVariant::V2, g, x.get() + 1, w.get(), y.get(), nullptr) ==
          cudaErrorInvalidValue);  // 16-byte alignment of cp.async sources
    CHECK(conv2d_fwd_native<bf16>(static_cast<ConvVariant>(99), g, x.get(), w.get(), y.get(),
                                  nullptr) == cudaErrorInvalidValue);
    Guarded<float> sc(std::vector<float>(static_cast<size_t>(g.K), 1.0f));
    ConvFwdFusion half;  // scale without shift
    half.scale = sc.get();
    CHECK(conv2d_fwd_native_fused<bf16>(ConvVariant::V1, g, x.get(), w.get(), y.get(), half,
                                        nullptr) == cudaErrorInvalidValue);
    CHECK(std::string(conv_variant_name(ConvVariant::V1)) == "v1");
    CHECK(std::string(conv_variant_name(ConvVariant::V2)) == "v2");
    (void)y.read();

    // Split-K wgrad adds its partials in a fixed order: two runs agree bitwise.
    // (A variant that declines this GEMM, as v3 declines N <= 64, is not asked.)
    for (ConvVariant v : kConvVariants) {
      CAPTURE(conv_variant_name(v));
      if (!conv2d_native_supported<bf16>(v, ConvPass::Wgrad, g)) continue;
      Guarded<bf16> dw1(g.K * g.R * g.S * g.C), dw2(g.K * g.R * g.S * g.C);
      const cudaError_t first = conv2d_bwd_filter_native<bf16>(v, g, x.get(), dy.get(), dw1.get(), nullptr);
      if (refused_here(v, first)) continue;
      REQUIRE(first == cudaSuccess);
      REQUIRE(conv2d_bwd_filter_native<bf16>(v, g, x.get(), dy.get(), dw2.get(), nullptr) ==
              cudaSuccess);
      const std::vector<bf16> a = dw1.read(), b = dw2.read();
      bool same = true;
      for (size_t i = 0; i < a.size(); ++i) same = same && a[i].bits == b[i].bits;
      CHECK(same);
    }
  }
#endif
}
