// CUDA activation, SE channel scale, pooling, global average pool and batch
// norm kernels against their CPU twins, on odd shapes (N = 1..3, H, W in
// {1, 5, 7, 16}, C in {1, 3, 64, 67}), stride-2 and ceil-mode pooling, with
// 0xA5 sentinel guards around every device buffer (tests/gpu/gpu_guard.h).
// fp32: |gpu - cpu| <= 1e-4 * (|cpu| + mag), mag being the sum of |terms| of
// a reduction (0 for elementwise results). bf16: the CPU twin runs in fp32 on
// the bf16-rounded inputs; the GPU result must be within a normalized MSE of
// 1e-4 (bf16 output rounding alone gives about 1e-6).
#include "tests/gpu/gpu_test.h"

#if defined(RZ_HAVE_CUDA)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/channel_scale.h"
#include "kernels/cpu/pool.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/channel_scale.cuh"
#include "kernels/cuda/pool.cuh"
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

constexpr double kRtol = 1e-4;
constexpr double kNmse = 1e-4;

Vec abs_vec(const Vec& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
  return out;
}

// |got - ref| <= rtol * (|ref| + mag) elementwise (mag empty: 0); both NaN and
// equal infinities count as equal.
void expect_close(const Vec& got, const Vec& ref, double rtol, const Vec& mag = {}) {
  REQUIRE(got.size() == ref.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], r = ref[i];
    if (std::isnan(r) && std::isnan(g)) continue;
    if (std::isinf(r) && g == r) continue;
    const double m = mag.empty() ? 0.0 : static_cast<double>(mag[i]);
    if (!(std::fabs(g - r) <= rtol * (std::fabs(r) + m))) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  }
  if (bad > 0) {
    const auto f = static_cast<size_t>(first);
    INFO("first mismatch at ", first, ": gpu ", got[f], " cpu ", ref[f]);
    CHECK(bad == 0);
  } else {
    CHECK(bad == 0);
  }
}

double nmse(const Vec& got, const Vec& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return den > 0.0 ? num / den : num;
}

void expect_nmse(const Vec& got, const Vec& ref) {
  REQUIRE(got.size() == ref.size());
  const double e = nmse(got, ref);
  INFO("nmse ", e);
  CHECK(e < kNmse);
}

cudaStream_t stream() {
  return cudaStreamPerThread;
}

struct PoolCase {
  int64_t kh, kw, sh, sw, ph, pw;
  bool ceil_mode;
};

// Stem maxpool, avg_down pool (2x2 s2 ceil), stride 1, asymmetric ceil, 3x3 s2 ceil.
const PoolCase kPoolCases[] = {{3, 3, 2, 2, 1, 1, false},
                               {2, 2, 2, 2, 0, 0, true},
                               {3, 3, 1, 1, 1, 1, false},
                               {3, 2, 2, 1, 1, 0, true},
                               {3, 3, 2, 2, 0, 0, true}};

struct Hw {
  int64_t h, w;
};
const Hw kSizes[] = {{1, 1}, {5, 7}, {7, 5}, {16, 16}, {1, 16}, {7, 7}};
const int64_t kChannels[] = {1, 3, 64, 67};

}  // namespace
#endif

TEST_SUITE("gpu") {
#if defined(RZ_HAVE_CUDA)
  TEST_CASE("gpu: relu and sigmoid match the CPU twins (fp32, bf16, in place)") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(11);
    for (int64_t n : {1, 7, 255, 257, 100003}) {
      CAPTURE(n);
      Vec x = random_vec(n, -6, 6, gen), dy = random_vec(n, -2, 2, gen);
      const float specials[] = {0.0f, -0.0f, 1000.0f, -1000.0f, -40.0f, 40.0f, 1e-30f};
      for (size_t i = 0; i < std::size(specials) && i < x.size(); ++i) x[i] = specials[i];
      const auto un = static_cast<size_t>(n);

      // fp32
      Guarded<float> dxs(x), ddy(dy);
      Vec ry(un), rs(un), rdx(un);
      relu_fwd_cpu(x.data(), ry.data(), n);
      sigmoid_fwd_cpu(x.data(), rs.data(), n);
      Guarded<float> gy(n), gs(n), gdx(n), gdxs(n);
      RZ_CUDA_CHECK(relu_fwd_cuda(dxs.get(), gy.get(), n, stream()));
      RZ_CUDA_CHECK(sigmoid_fwd_cuda(dxs.get(), gs.get(), n, stream()));
      CHECK(gy.read() == ry);
      expect_close(gs.read(), rs, kRtol);
      relu_bwd_cpu(ry.data(), dy.data(), rdx.data(), n);
      RZ_CUDA_CHECK(relu_bwd_cuda(gy.get(), ddy.get(), gdx.get(), n, stream()));
      CHECK(gdx.read() == rdx);
      sigmoid_bwd_cpu(rs.data(), dy.data(), rdx.data(), n);
      Guarded<float> gs_cpu(rs);  // the CPU forward output, so only the backward is compared
      RZ_CUDA_CHECK(sigmoid_bwd_cuda(gs_cpu.get(), ddy.get(), gdxs.get(), n, stream()));
      expect_close(gdxs.read(), rdx, kRtol);

      // In place: y aliases x, dx aliases dy.
      Guarded<float> inplace(x);
      RZ_CUDA_CHECK(relu_fwd_cuda(inplace.get(), inplace.get(), n, stream()));
      CHECK(inplace.read() == ry);
      Guarded<float> inplace_dy(dy);
      RZ_CUDA_CHECK(relu_bwd_cuda(gy.get(), inplace_dy.get(), inplace_dy.get(), n, stream()));
      relu_bwd_cpu(ry.data(), dy.data(), rdx.data(), n);
      CHECK(inplace_dy.read() == rdx);

      // bf16 against the fp32 twin on the rounded inputs.
      const Vec xr = rounded(x), dyr = rounded(dy);
      Guarded<bf16> hx(to_bf16(x)), hdy(to_bf16(dy)), hy(n), hs(n), hdx(n), hdxs(n);
      relu_fwd_cpu(xr.data(), ry.data(), n);
      sigmoid_fwd_cpu(xr.data(), rs.data(), n);
      RZ_CUDA_CHECK(relu_fwd_cuda(hx.get(), hy.get(), n, stream()));
      RZ_CUDA_CHECK(sigmoid_fwd_cuda(hx.get(), hs.get(), n, stream()));
      CHECK(to_f32(hy.read()) == ry);  // relu of a bf16 value is exact
      expect_nmse(to_f32(hs.read()), rs);
      const Vec hy_vals = to_f32(hy.read()), hs_vals = to_f32(hs.read());
      relu_bwd_cpu(hy_vals.data(), dyr.data(), rdx.data(), n);
      RZ_CUDA_CHECK(relu_bwd_cuda(hy.get(), hdy.get(), hdx.get(), n, stream()));
      CHECK(to_f32(hdx.read()) == rdx);
      sigmoid_bwd_cpu(hs_vals.data(), dyr.data(), rdx.data(), n);
      RZ_CUDA_CHECK(sigmoid_bwd_cuda(hs.get(), hdy.get(), hdxs.get(), n, stream()));
      expect_nmse(to_f32(hdxs.read()), rdx);
    }
  }

  TEST_CASE("gpu: SE channel scale matches the CPU twin") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(12);
    int64_t N = 1;
    for (const Hw hw_size : kSizes) {
      for (const int64_t C : kChannels) {
        N = N % 3 + 1;
        const int64_t HW = hw_size.h * hw_size.w, n = N * HW * C;
        CAPTURE(N);
        CAPTURE(HW);
        CAPTURE(C);
        const Vec x = random_vec(n, -2, 2, gen), dy = random_vec(n, -1, 1, gen);
        const Vec s = random_vec(N * C, 0, 1, gen);
        const auto un = static_cast<size_t>(n), unc = static_cast<size_t>(N * C);
        Vec ry(un), rdx(un), rds(unc), mag(unc);
        channel_scale_fwd_cpu(x.data(), s.data(), ry.data(), N, HW, C);
        channel_scale_bwd_cpu(x.data(), s.data(), dy.data(), rdx.data(), rds.data(), N, HW, C);
        const Vec ax = abs_vec(x), ady = abs_vec(dy);
        channel_scale_bwd_cpu(ax.data(), s.data(), ady.data(), static_cast<float*>(nullptr),
                              mag.data(), N, HW, C);

        Guarded<float> gx(x), gs(s), gdy(dy), gy(n), gdx(n), gds(N * C), gdx_only(n),
            gds_only(N * C);
        RZ_CUDA_CHECK(channel_scale_fwd_cuda(gx.get(), gs.get(), gy.get(), N, HW, C, stream()));
        expect_close(gy.read(), ry, kRtol);
        RZ_CUDA_CHECK(channel_scale_bwd_cuda(gx.get(), gs.get(), gdy.get(), gdx.get(), gds.get(), N,
                                             HW, C, stream()));
        expect_close(gdx.read(), rdx, kRtol);
        expect_close(gds.read(), rds, kRtol, mag);
        // One output only: the other pointer is nullptr and must stay untouched.
        RZ_CUDA_CHECK(channel_scale_bwd_cuda(gx.get(), gs.get(), gdy.get(), gdx_only.get(),
                                             static_cast<float*>(nullptr), N, HW, C, stream()));
        expect_close(gdx_only.read(), rdx, kRtol);
        RZ_CUDA_CHECK(channel_scale_bwd_cuda(gx.get(), gs.get(), gdy.get(),
                                             static_cast<float*>(nullptr), gds_only.get(), N, HW, C,
                                             stream()));
        expect_close(gds_only.read(), rds, kRtol, mag);

        // bf16
        const Vec xr = rounded(x), sr = rounded(s), dyr = rounded(dy);
        channel_scale_fwd_cpu(xr.data(), sr.data(), ry.data(), N, HW, C);
        channel_scale_bwd_cpu(xr.data(), sr.data(), dyr.data(), rdx.data(), rds.data(), N, HW, C);
        Guarded<bf16> hx(to_bf16(x)), hs(to_bf16(s)), hdy(to_bf16(dy)), hy(n), hdx(n), hds(N * C);
        RZ_CUDA_CHECK(channel_scale_fwd_cuda(hx.get(), hs.get(), hy.get(), N, HW, C, stream()));
        RZ_CUDA_CHECK(channel_scale_bwd_cuda(hx.get(), hs.get(), hdy.get(), hdx.get(), hds.get(), N,
                                             HW, C, stream()));
        expect_nmse(to_f32(hy.read()), ry);
        expect_nmse(to_f32(hdx.read()), rdx);
        expect_nmse(to_f32(hds.read()), rds);
      }
    }
  }

  TEST_CASE("gpu: max and average pooling match the CPU twins") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(13);
    int64_t N = 1;
    for (const Hw hw_size : kSizes) {
      for (const int64_t C : kChannels) {
        for (const PoolCase& pc : kPoolCases) {
          N = N % 3 + 1;
          const Pool2dGeom g = make_pool2d_geom(N, hw_size.h, hw_size.w, C, pc.kh, pc.kw, pc.sh,
                                                pc.sw, pc.ph, pc.pw, pc.ceil_mode);
          if (g.OH < 1 || g.OW < 1) continue;
          CAPTURE(N);
          CAPTURE(hw_size.h);
          CAPTURE(hw_size.w);
          CAPTURE(C);
          CAPTURE(pc.kh);
          CAPTURE(pc.sh);
          CAPTURE(pc.ceil_mode);
          const int64_t nin = N * g.H * g.W * C, nout = N * g.OH * g.OW * C;
          const auto uin = static_cast<size_t>(nin), uout = static_cast<size_t>(nout);
          Vec x = random_vec(nin, -4, 4, gen);
          const Vec dy = random_vec(nout, -1, 1, gen);
          // A NaN and a -inf in the first image (propagation and -inf windows).
          if (nin > 2 * C) {
            x[1] = std::numeric_limits<float>::quiet_NaN();
            x[static_cast<size_t>(C)] = -std::numeric_limits<float>::infinity();
          }

          // ---- max pool, fp32: forward exact, backward in the CPU's order ----
          Vec ry(uout), rdx(uin);
          std::vector<int32_t> rarg(uout);
          max_pool2d_fwd_cpu(x.data(), ry.data(), rarg.data(), g);
          max_pool2d_bwd_cpu(dy.data(), rarg.data(), rdx.data(), g);
          Guarded<float> gx(x), gdy(dy), gy(nout), gdx(nin);
          Guarded<int32_t> garg(nout);
          RZ_CUDA_CHECK(max_pool2d_fwd_cuda(gx.get(), gy.get(), garg.get(), g, stream()));
          expect_close(gy.read(), ry, 0.0);
          CHECK(garg.read() == rarg);
          Guarded<int32_t> garg_cpu(rarg);
          RZ_CUDA_CHECK(max_pool2d_bwd_cuda(gdy.get(), garg_cpu.get(), gdx.get(), g, stream()));
          expect_close(gdx.read(), rdx, kRtol);

          // ---- max pool, bf16 (no NaN/inf here: compared with an MSE) ----
          Vec xf = x;
          for (float& v : xf)
            if (!std::isfinite(v)) v = 0.5f;
          const Vec xr = rounded(xf), dyr = rounded(dy);
          max_pool2d_fwd_cpu(xr.data(), ry.data(), rarg.data(), g);
          max_pool2d_bwd_cpu(dyr.data(), rarg.data(), rdx.data(), g);
          Guarded<bf16> hx(to_bf16(xf)), hdy(to_bf16(dy)), hy(nout), hdx(nin);
          Guarded<int32_t> harg(nout);
          RZ_CUDA_CHECK(max_pool2d_fwd_cuda(hx.get(), hy.get(), harg.get(), g, stream()));
          CHECK(to_f32(hy.read()) == ry);  // the max of bf16 values is one of them
          CHECK(harg.read() == rarg);
          RZ_CUDA_CHECK(max_pool2d_bwd_cuda(hdy.get(), harg.get(), hdx.get(), g, stream()));
          expect_nmse(to_f32(hdx.read()), rdx);

          // ---- average pool, both count_include_pad modes ----
          const Vec axf = abs_vec(xf), ady = abs_vec(dy);
          for (const bool cip : {false, true}) {
            CAPTURE(cip);
            Vec mag_y(uout), mag_dx(uin);
            avg_pool2d_fwd_cpu(xf.data(), ry.data(), g, cip);
            avg_pool2d_fwd_cpu(axf.data(), mag_y.data(), g, cip);
            avg_pool2d_bwd_cpu(dy.data(), rdx.data(), g, cip);
            avg_pool2d_bwd_cpu(ady.data(), mag_dx.data(), g, cip);
            Guarded<float> fx(xf), fy(nout), fdx(nin);
            RZ_CUDA_CHECK(avg_pool2d_fwd_cuda(fx.get(), fy.get(), g, cip, stream()));
            expect_close(fy.read(), ry, kRtol, mag_y);
            RZ_CUDA_CHECK(avg_pool2d_bwd_cuda(gdy.get(), fdx.get(), g, cip, stream()));
            expect_close(fdx.read(), rdx, kRtol, mag_dx);

            avg_pool2d_fwd_cpu(xr.data(), ry.data(), g, cip);
            avg_pool2d_bwd_cpu(dyr.data(), rdx.data(), g, cip);
            Guarded<bf16> ay(nout), adx(nin);
            RZ_CUDA_CHECK(avg_pool2d_fwd_cuda(hx.get(), ay.get(), g, cip, stream()));
            RZ_CUDA_CHECK(avg_pool2d_bwd_cuda(hdy.get(), adx.get(), g, cip, stream()));
            expect_nmse(to_f32(ay.read()), ry);
            expect_nmse(to_f32(adx.read()), rdx);
          }
        }
      }
    }
  }

  TEST_CASE("gpu: global average pool matches the CPU twin") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(14);
    int64_t N = 1;
    for (const Hw hw_size : kSizes) {
      for (const int64_t C : kChannels) {
        N = N % 3 + 1;
        const int64_t HW = hw_size.h * hw_size.w, n = N * HW * C;
        CAPTURE(N);
        CAPTURE(HW);
        CAPTURE(C);
        const Vec x = random_vec(n, -2, 3, gen), dy = random_vec(N * C, -1, 1, gen);
        const auto un = static_cast<size_t>(n), unc = static_cast<size_t>(N * C);
        Vec ry(unc), mag(unc), rdx(un);
        const Vec ax = abs_vec(x);
        global_avg_pool_fwd_cpu(x.data(), ry.data(), N, HW, C);
        global_avg_pool_fwd_cpu(ax.data(), mag.data(), N, HW, C);
        global_avg_pool_bwd_cpu(dy.data(), rdx.data(), N, HW, C);
        Guarded<float> gx(x), gdy(dy), gy(N * C), gdx(n);
        RZ_CUDA_CHECK(global_avg_pool_fwd_cuda(gx.get(), gy.get(), N, HW, C, stream()));
        RZ_CUDA_CHECK(global_avg_pool_bwd_cuda(gdy.get(), gdx.get(), N, HW, C, stream()));
        expect_close(gy.read(), ry, kRtol, mag);
        expect_close(gdx.read(), rdx, kRtol);

        const Vec xr = rounded(x), dyr = rounded(dy);
        global_avg_pool_fwd_cpu(xr.data(), ry.data(), N, HW, C);
        global_avg_pool_bwd_cpu(dyr.data(), rdx.data(), N, HW, C);
        Guarded<bf16> hx(to_bf16(x)), hdy(to_bf16(dy)), hy(N * C), hdx(n);
        RZ_CUDA_CHECK(global_avg_pool_fwd_cuda(hx.get(), hy.get(), N, HW, C, stream()));
        RZ_CUDA_CHECK(global_avg_pool_bwd_cuda(hdy.get(), hdx.get(), N, HW, C, stream()));
        expect_nmse(to_f32(hy.read()), ry);
        expect_nmse(to_f32(hdx.read()), rdx);
      }
    }
  }

  TEST_CASE("gpu: batch norm matches the CPU twin (train, eval, backward; fp32 and bf16)") {
    RZ_SKIP_WITHOUT_GPU();
    Generator gen(15);
    // M = N*H*W: 1 (the M == 1 running-variance rule), odd sizes, and M large
    // enough for many row chunks (12288: 192 chunks; 20001: the 256-chunk cap).
    const int64_t kRows[] = {1, 2, 35, 3 * 49, 2 * 256, 3 * 64 * 64, 20001};
    const double momentum = 0.1, eps = 1e-5;
    for (const int64_t M : kRows) {
      for (const int64_t C : kChannels) {
        CAPTURE(M);
        CAPTURE(C);
        const int64_t n = M * C;
        const auto un = static_cast<size_t>(n), uc = static_cast<size_t>(C);
        const Vec x = random_vec(n, -2, 3, gen), dy = random_vec(n, -1, 1, gen);
        const Vec gamma = random_vec(C, 0.5, 1.5, gen), beta = random_vec(C, -0.5, 0.5, gen);
        const Vec rm0 = random_vec(C, -0.2, 0.2, gen), rv0 = random_vec(C, 0.5, 2, gen);

        // Magnitudes of the reductions' terms, for the tolerances.
        const auto magnitudes = [&](const Vec& xs, const Vec& dys, const Vec& mean,
                                    const Vec& invstd, Vec& mag_mean, Vec& mag_dg, Vec& mag_db,
                                    Vec& mag_dx) {
          mag_mean.assign(uc, 0.0f);
          mag_dg.assign(uc, 0.0f);
          mag_db.assign(uc, 0.0f);
          mag_dx.assign(un, 0.0f);
          std::vector<double> sm(uc, 0.0), sg(uc, 0.0), sb(uc, 0.0);
          for (int64_t r = 0; r < M; ++r)
            for (int64_t c = 0; c < C; ++c) {
              const auto i = static_cast<size_t>(r * C + c), uc_i = static_cast<size_t>(c);
              const double xh = (xs[i] - mean[uc_i]) * static_cast<double>(invstd[uc_i]);
              sm[uc_i] += std::fabs(xs[i]);
              sg[uc_i] += std::fabs(dys[i] * xh);
              sb[uc_i] += std::fabs(dys[i]);
            }
          for (size_t c = 0; c < uc; ++c) {
            mag_mean[c] = static_cast<float>(sm[c] / static_cast<double>(M));
            mag_dg[c] = static_cast<float>(sg[c]);
            mag_db[c] = static_cast<float>(sb[c]);
          }
          for (int64_t r = 0; r < M; ++r)
            for (int64_t c = 0; c < C; ++c) {
              const auto i = static_cast<size_t>(r * C + c), k = static_cast<size_t>(c);
              const double xh = (xs[i] - mean[k]) * static_cast<double>(invstd[k]);
              mag_dx[i] = static_cast<float>(
                  std::fabs(gamma[k] * invstd[k]) *
                  (std::fabs(dys[i]) + (sb[k] + std::fabs(xh) * sg[k]) / static_cast<double>(M)));
            }
        };

        // ---- fp32 ----
        Vec ry(un), rmean(uc), rinv(uc), rrm = rm0, rrv = rv0, rdx(un), rdg(uc), rdb(uc);
        batch_norm_fwd_train_cpu(x.data(), gamma.data(), beta.data(), ry.data(), rmean.data(),
                                 rinv.data(), rrm.data(), rrv.data(), M, C, momentum, eps);
        Vec mag_mean, mag_dg, mag_db, mag_dx;
        magnitudes(x, dy, rmean, rinv, mag_mean, mag_dg, mag_db, mag_dx);
        const Vec ones(un, 1.0f), ones_c(uc, 1.0f);  // normalized outputs are O(1)

        Guarded<float> gx(x), gdy(dy), gg(gamma), gb(beta), grm(rm0), grv(rv0), gy(n), gmean(C),
            ginv(C);
        RZ_CUDA_CHECK(batch_norm_fwd_train_cuda(gx.get(), gg.get(), gb.get(), gy.get(), gmean.get(),
                                                ginv.get(), grm.get(), grv.get(), M, C, momentum,
                                                eps, stream()));
        expect_close(gy.read(), ry, kRtol, ones);
        expect_close(gmean.read(), rmean, kRtol, mag_mean);
        expect_close(ginv.read(), rinv, kRtol);
        expect_close(grm.read(), rrm, kRtol, mag_mean);
        expect_close(grv.read(), rrv, kRtol);
        // Statistics outputs are optional.
        Guarded<float> gy2(n);
        RZ_CUDA_CHECK(batch_norm_fwd_train_cuda(gx.get(), gg.get(), gb.get(), gy2.get(), nullptr,
                                                nullptr, nullptr, nullptr, M, C, momentum, eps,
                                                stream()));
        expect_close(gy2.read(), ry, kRtol, ones);

        // Eval forward.
        batch_norm_fwd_eval_cpu(x.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(),
                                ry.data(), M, C, eps);
        Guarded<float> grm0(rm0), grv0(rv0), gye(n);
        RZ_CUDA_CHECK(batch_norm_fwd_eval_cuda(gx.get(), gg.get(), gb.get(), grm0.get(), grv0.get(),
                                               gye.get(), M, C, eps, stream()));
        expect_close(gye.read(), ry, kRtol, ones);

        // Backward from the CPU's saved statistics, training and eval.
        Guarded<float> smean(rmean), sinv(rinv);
        for (const bool training : {true, false}) {
          CAPTURE(training);
          batch_norm_bwd_cpu(x.data(), dy.data(), gamma.data(), rmean.data(), rinv.data(),
                             rdx.data(), rdg.data(), rdb.data(), M, C, training);
          Guarded<float> gdx(n), gdg(C), gdb(C), gdx_only(n), gdg_only(C), gdb_only(C);
          RZ_CUDA_CHECK(batch_norm_bwd_cuda(gx.get(), gdy.get(), gg.get(), smean.get(), sinv.get(),
                                            gdx.get(), gdg.get(), gdb.get(), M, C, training,
                                            stream()));
          expect_close(gdx.read(), rdx, kRtol, mag_dx);
          expect_close(gdg.read(), rdg, kRtol, mag_dg);
          expect_close(gdb.read(), rdb, kRtol, mag_db);
          RZ_CUDA_CHECK(batch_norm_bwd_cuda(gx.get(), gdy.get(), gg.get(), smean.get(), sinv.get(),
                                            gdx_only.get(), nullptr, nullptr, M, C, training,
                                            stream()));
          expect_close(gdx_only.read(), rdx, kRtol, mag_dx);
          RZ_CUDA_CHECK(batch_norm_bwd_cuda(gx.get(), gdy.get(), gg.get(), smean.get(), sinv.get(),
                                            static_cast<float*>(nullptr), gdg_only.get(),
                                            gdb_only.get(), M, C, training, stream()));
          expect_close(gdg_only.read(), rdg, kRtol, mag_dg);
          expect_close(gdb_only.read(), rdb, kRtol, mag_db);
        }

        // ---- bf16 activations, fp32 statistics ----
        const Vec xr = rounded(x), dyr = rounded(dy);
        rrm = rm0;
        rrv = rv0;
        batch_norm_fwd_train_cpu(xr.data(), gamma.data(), beta.data(), ry.data(), rmean.data(),
                                 rinv.data(), rrm.data(), rrv.data(), M, C, momentum, eps);
        magnitudes(xr, dyr, rmean, rinv, mag_mean, mag_dg, mag_db, mag_dx);
        Guarded<bf16> hx(to_bf16(x)), hdy(to_bf16(dy)), hy(n), hye(n), hdx(n);
        Guarded<float> hrm(rm0), hrv(rv0), hmean(C), hinv(C), hdg(C), hdb(C);
        RZ_CUDA_CHECK(batch_norm_fwd_train_cuda(hx.get(), gg.get(), gb.get(), hy.get(), hmean.get(),
                                                hinv.get(), hrm.get(), hrv.get(), M, C, momentum,
                                                eps, stream()));
        expect_nmse(to_f32(hy.read()), ry);
        expect_close(hmean.read(), rmean, kRtol, mag_mean);
        expect_close(hinv.read(), rinv, kRtol);
        expect_close(hrm.read(), rrm, kRtol, mag_mean);
        expect_close(hrv.read(), rrv, kRtol);
        batch_norm_fwd_eval_cpu(xr.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(),
                                ry.data(), M, C, eps);
        RZ_CUDA_CHECK(batch_norm_fwd_eval_cuda(hx.get(), gg.get(), gb.get(), grm0.get(), grv0.get(),
                                               hye.get(), M, C, eps, stream()));
        expect_nmse(to_f32(hye.read()), ry);
        batch_norm_bwd_cpu(xr.data(), dyr.data(), gamma.data(), rmean.data(), rinv.data(),
                           rdx.data(), rdg.data(), rdb.data(), M, C, true);
        Guarded<float> hsmean(rmean), hsinv(rinv);
        RZ_CUDA_CHECK(batch_norm_bwd_cuda(hx.get(), hdy.get(), gg.get(), hsmean.get(), hsinv.get(),
                                          hdx.get(), hdg.get(), hdb.get(), M, C, true, stream()));
        expect_nmse(to_f32(hdx.read()), rdx);
        expect_close(hdg.read(), rdg, kRtol, mag_dg);
        expect_close(hdb.read(), rdb, kRtol, mag_db);
      }
    }
  }

  TEST_CASE("gpu: activation kernels index past 2^31 elements") {
    RZ_SKIP_WITHOUT_GPU();
    const int64_t n = (int64_t{1} << 31) + 301;
    size_t free_bytes = 0, total_bytes = 0;
    RZ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (free_bytes < static_cast<size_t>(n) * 2 * sizeof(bf16) + (size_t{2} << 30)) {
      MESSAGE("skipped: not enough free device memory for 2 x 2^31 bf16");
      return;
    }
    Guarded<bf16> x(n), y(n);
    // 0x3F3F = 0.746..., a positive bf16: relu must copy it to every element.
    RZ_CUDA_CHECK(cudaMemset(x.get(), 0x3F, static_cast<size_t>(n) * sizeof(bf16)));
    RZ_CUDA_CHECK(relu_fwd_cuda(x.get(), y.get(), n, stream()));
    const std::vector<bf16> out = y.read();
    int64_t wrong = 0;
    for (const bf16 v : out) wrong += v.bits != 0x3F3F ? 1 : 0;
    CHECK(wrong == 0);
  }
#endif
}
