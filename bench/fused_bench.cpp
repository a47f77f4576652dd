// fused_bench: the fused SE block tail and fused BN + ReLU (kernels/cuda/
// fused_se.cuh, fused_bn.cuh) against the unfused sequences of existing
// launchers, on seresnet152d's block-tail shapes at batch 32, 512x512, bf16
// activations (fp32 parameters and statistics), training mode:
//   layer1 128x128x256, layer2 64x64x512, layer3 32x32x1024, layer4 16x16x2048
// (SE width rd = 16, 32, 64, 128 by timm's rule), and BN + ReLU at the conv1 /
// conv2 sites of the same stages (C / 4 channels, same H x W).
//
//   fused_bench [--reps N]
//
// Unfused SE tail forward:  batch_norm_fwd_train, global_avg_pool_fwd, fc1 (cuBLAS
//   GEMM + bias_add), relu, fc2 (GEMM + bias_add), sigmoid, channel_scale_fwd,
//   add, relu. Backward: relu_bwd, channel_scale_bwd, sigmoid_bwd, fc2 backward
//   (2 GEMMs + col_sum), relu_bwd, fc1 backward (2 GEMMs + col_sum),
//   global_avg_pool_bwd, add (the two gradients of u), batch_norm_bwd.
// Unfused BN + ReLU: batch_norm_fwd_train + relu_fwd; relu_bwd + batch_norm_bwd.
//
// Bytes: "traffic" counts the big [N, H, W, C] tensor elements each sequence
// actually reads and writes (2 bytes each; the O(N*C) vectors and weights are
// left out): SE forward unfused 12 (BN 3R+1W, pool 1R, scale 1R+1W, add
// 2R+1W, relu 1R+1W), fused 4 (3R+1W); SE backward unfused 15 (relu_bwd
// 2R+1W, scale_bwd 2R+1W, pool_bwd 1W, add 2R+1W, BN bwd 4R+1W), fused 7
// (5R+2W); BN + ReLU forward unfused 6, fused 3; backward unfused 8, fused 7.
// "conv sums" rows: the fused forwards given the statistics sums a native
// conv epilogue produces (conv_bn_act, conv2d_with_sums): SE forward 3
// (2R+1W), BN + ReLU forward 2 (1R+1W), i.e. exactly the compulsory bytes.
// "compulsory" is one read of every input and one write of every output (SE
// forward 3, backward 5; BN + ReLU forward 2, backward 4): the time an ideal
// single-pass kernel would need. GB/s = traffic / median time; %HBM = that /
// rz::bench::measured_hbm_gbps(); "ideal" = compulsory / measured bandwidth.
// Timing: rz::bench::time_gpu (3 warm-ups, --reps runs, L2 flushed before
// each, CUDA events); medians. After timing, the fused and unfused outputs are
// compared (normalized MSE), a check at full size, not a test.
// Without a GPU (or in a build without CUDA) it prints one line and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/gpu_bench.h"

#if defined(RZ_HAVE_CUDA)
#include "engine/cuda_context.h"
#include "engine/cuda_gemm.h"
#include "kernels/common/bf16.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/channel_scale.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/fused_bn.cuh"
#include "kernels/cuda/fused_se.cuh"
#include "kernels/cuda/pool.cuh"
#include "kernels/cuda/reduce.cuh"
#endif

#if defined(RZ_HAVE_CUDA)
namespace {

using rz::bf16;

// A device buffer of n elements (freed on scope exit).
template <typename T>
class DeviceBuf {
 public:
  explicit DeviceBuf(int64_t n) : n_(n) {
    RZ_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), static_cast<size_t>(n) * sizeof(T)));
  }
  ~DeviceBuf() { cudaFree(p_); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  T* get() const { return p_; }
  void upload(const T* host) {
    RZ_CUDA_CHECK(
        cudaMemcpy(p_, host, static_cast<size_t>(n_) * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(static_cast<size_t>(n_));
    RZ_CUDA_CHECK(cudaMemcpy(h.data(), p_, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  int64_t n_;
  T* p_ = nullptr;
};

// Deterministic pseudo-random values in [lo, hi) (a 64-bit LCG; speed over quality).
std::vector<float> host_random(int64_t n, double lo, double hi, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& e : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    e = static_cast<float>(lo + (hi - lo) * static_cast<double>(s >> 11) * 0x1.0p-53);
  }
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = rz::f32_to_bf16(v[i]);
  return out;
}

double nmse_bf16(const std::vector<bf16>& got, const std::vector<bf16>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = rz::bf16_to_f32(got[i]), r = rz::bf16_to_f32(ref[i]);
    num += (g - r) * (g - r);
    den += r * r;
  }
  return den > 0.0 ? num / den : num;
}

int64_t se_rd(int64_t C) {
  return std::max<int64_t>(8, static_cast<int64_t>(static_cast<double>(C) / 16.0 + 4.0) / 8 * 8);
}

struct Stage {
  const char* name;
  int64_t H, W, C;
};

struct Row {
  std::string what;
  double ms, traffic_bytes, compulsory_bytes;
};

void print_row(const Row& r, double hbm_gbps) {
  const double gbps = r.traffic_bytes / (r.ms * 1e6);
  const double ideal_ms = r.compulsory_bytes / (hbm_gbps * 1e6);
  std::printf(
      "  %-34s %8.3f ms  traffic %7.1f MB  %7.0f GB/s  %5.1f%% HBM  ideal %7.3f ms (%4.1f%%)\n",
      r.what.c_str(), r.ms, r.traffic_bytes / 1e6, gbps, 100.0 * gbps / hbm_gbps, ideal_ms,
      100.0 * ideal_ms / r.ms);
}

void bench_stage(const Stage& st, int64_t batch, int reps, double hbm_gbps, rz::CudaContext& ctx,
                 const std::vector<bf16>& noise) {
  using rz::DType;
  cudaStream_t s = ctx.stream();
  const int64_t N = batch, HW = st.H * st.W, C = st.C, rd = se_rd(C), M = N * HW, n = M * C;
  const double elem_bytes = static_cast<double>(n) * sizeof(bf16);
  std::printf("%s  %lldx%lldx%lld, N %lld, rd %lld (%.0f MB per bf16 tensor)\n", st.name,
              static_cast<long long>(st.H), static_cast<long long>(st.W), static_cast<long long>(C),
              static_cast<long long>(N), static_cast<long long>(rd), elem_bytes / 1e6);

  // Inputs: t, shortcut, dout from the noise buffer (different offsets).
  DeviceBuf<bf16> t(n), sc(n), dout(n);
  t.upload(noise.data());
  sc.upload(noise.data() + 1);
  dout.upload(noise.data() + 2);
  const std::vector<float> gamma_h = host_random(C, 0.5, 1.5, 1),
                           beta_h = host_random(C, -0.5, 0.5, 2);
  const double b1w = 1.0 / std::sqrt(static_cast<double>(C)),
               b2w = 1.0 / std::sqrt(static_cast<double>(rd));
  const std::vector<float> w1_h = host_random(rd * C, -2 * b1w, 2 * b1w, 3),
                           b1_h = host_random(rd, -b1w, b1w, 4),
                           w2_h = host_random(C * rd, -2 * b2w, 2 * b2w, 5),
                           b2_h = host_random(C, -b2w, b2w, 6);
  const std::vector<float> ones(static_cast<size_t>(C), 1.0f), zeros(static_cast<size_t>(C), 0.0f);
  DeviceBuf<float> gamma(C), beta(C), w1(rd * C), b1(rd), w2(C * rd), b2(C), rm(C), rv(C);
  gamma.upload(gamma_h.data());
  beta.upload(beta_h.data());
  w1.upload(w1_h.data());
  b1.upload(b1_h.data());
  w2.upload(w2_h.data());
  b2.upload(b2_h.data());
  rm.upload(zeros.data());
  rv.upload(ones.data());
  DeviceBuf<bf16> w1h(rd * C), w2h(C * rd);  // bf16 copies for the cuBLAS path
  w1h.upload(to_bf16(w1_h).data());
  w2h.upload(to_bf16(w2_h).data());

  // Unfused intermediates.
  DeviceBuf<bf16> u(n), v(n), sum(n), out_u(n), g(n), du1(n), du2(n), du(n), dt_u(n);
  DeviceBuf<bf16> p(N * C), a1(N * rd), z(N * rd), a2(N * C), gate_h(N * C), ds(N * C), dzs(N * C),
      dz(N * rd), dh(N * rd), dp(N * C);
  DeviceBuf<float> mean(C), invstd(C), dgamma(C), dbeta(C), dw1(rd * C), db1(rd), dw2(C * rd),
      db2(C);
  // Fused outputs.
  DeviceBuf<bf16> out_f(n), dt_f(n), dsc_f(n);
  DeviceBuf<float> fmean(C), finvstd(C), pooled(N * C), hidden(N * rd), gate(N * C);
  const rz::SeWeights<float> wts{gamma.get(), beta.get(), w1.get(), b1.get(), w2.get(), b2.get()};
  const rz::SeSaved<float> saved{fmean.get(), finvstd.get(), pooled.get(), hidden.get(),
                                 gate.get()};
  const rz::SeGrads<float> grads{dgamma.get(), dbeta.get(), dw1.get(),
                                 db1.get(),    dw2.get(),   db2.get()};
  const rz::SeDims dims{N, HW, C, rd};
  const rz::FusedSeOptions opt{true, 0.1, 1e-5};

  const auto unfused_fwd = [&] {
    RZ_CUDA_CHECK(rz::batch_norm_fwd_train_cuda(t.get(), gamma.get(), beta.get(), u.get(),
                                                mean.get(), invstd.get(), rm.get(), rv.get(), M, C,
                                                0.1, 1e-5, s));
    RZ_CUDA_CHECK(rz::global_avg_pool_fwd_cuda(u.get(), p.get(), N, HW, C, s));
    rz::gemm_cublas(ctx, DType::BF16, DType::BF16, false, true, N, rd, C, 1.0f, p.get(), C,
                    w1h.get(), C, 0.0f, a1.get(), rd);
    RZ_CUDA_CHECK(rz::bias_add_cuda(a1.get(), b1.get(), N, rd, s));
    RZ_CUDA_CHECK(rz::relu_fwd_cuda(a1.get(), z.get(), N * rd, s));
    rz::gemm_cublas(ctx, DType::BF16, DType::BF16, false, true, N, C, rd, 1.0f, z.get(), rd,
                    w2h.get(), rd, 0.0f, a2.get(), C);
    RZ_CUDA_CHECK(rz::bias_add_cuda(a2.get(), b2.get(), N, C, s));
    RZ_CUDA_CHECK(rz::sigmoid_fwd_cuda(a2.get(), gate_h.get(), N * C, s));
    RZ_CUDA_CHECK(rz::channel_scale_fwd_cuda(u.get(), gate_h.get(), v.get(), N, HW, C, s));
    RZ_CUDA_CHECK(rz::add_cuda(v.get(), sc.get(), sum.get(), n, s));
    RZ_CUDA_CHECK(rz::relu_fwd_cuda(sum.get(), out_u.get(), n, s));
  };
  const auto unfused_bwd = [&] {
    RZ_CUDA_CHECK(rz::relu_bwd_cuda(out_u.get(), dout.get(), g.get(), n, s));
    RZ_CUDA_CHECK(rz::channel_scale_bwd_cuda(u.get(), gate_h.get(), g.get(), du1.get(), ds.get(), N,
                                             HW, C, s));
    RZ_CUDA_CHECK(rz::sigmoid_bwd_cuda(gate_h.get(), ds.get(), dzs.get(), N * C, s));
    rz::gemm_cublas(ctx, DType::BF16, DType::BF16, false, false, N, rd, C, 1.0f, dzs.get(), C,
                    w2h.get(), rd, 0.0f, dz.get(), rd);
    rz::gemm_cublas(ctx, DType::BF16, DType::F32, true, false, C, rd, N, 1.0f, dzs.get(), C,
                    z.get(), rd, 0.0f, dw2.get(), rd);
    RZ_CUDA_CHECK(rz::col_sum_cuda(dzs.get(), N, C, db2.get(), s));
    RZ_CUDA_CHECK(rz::relu_bwd_cuda(z.get(), dz.get(), dh.get(), N * rd, s));
    rz::gemm_cublas(ctx, DType::BF16, DType::BF16, false, false, N, C, rd, 1.0f, dh.get(), rd,
                    w1h.get(), C, 0.0f, dp.get(), C);
    rz::gemm_cublas(ctx, DType::BF16, DType::F32, true, false, rd, C, N, 1.0f, dh.get(), rd,
                    p.get(), C, 0.0f, dw1.get(), C);
    RZ_CUDA_CHECK(rz::col_sum_cuda(dh.get(), N, rd, db1.get(), s));
    RZ_CUDA_CHECK(rz::global_avg_pool_bwd_cuda(dp.get(), du2.get(), N, HW, C, s));
    RZ_CUDA_CHECK(rz::add_cuda(du1.get(), du2.get(), du.get(), n, s));
    RZ_CUDA_CHECK(rz::batch_norm_bwd_cuda(t.get(), du.get(), gamma.get(), mean.get(), invstd.get(),
                                          dt_u.get(), dgamma.get(), dbeta.get(), M, C, true, s));
  };
  const auto fused_fwd = [&] {
    RZ_CUDA_CHECK(rz::fused_se_fwd_cuda(t.get(), sc.get(), wts, out_f.get(), saved, rm.get(),
                                        rv.get(), dims, opt, nullptr, s));
  };
  const auto fused_bwd = [&] {
    RZ_CUDA_CHECK(rz::fused_se_bwd_cuda(t.get(), out_f.get(), dout.get(), wts, saved.as_input(),
                                        dt_f.get(), dsc_f.get(), grads, dims, opt, s));
  };

  // The same forward from the producer's per-image sums (the conv3 epilogue
  // of conv2d_with_sums): the statistics pass is skipped. Plausible sums
  // (per image: mean 0, variance 1); values do not matter for timing.
  std::vector<double> img_sums_h(static_cast<size_t>(2 * N * C), 0.0);
  for (size_t i = static_cast<size_t>(N * C); i < img_sums_h.size(); ++i)
    img_sums_h[i] = static_cast<double>(HW);
  DeviceBuf<double> img_sums(2 * N * C);
  img_sums.upload(img_sums_h.data());
  const auto fused_fwd_sums = [&] {
    RZ_CUDA_CHECK(rz::fused_se_fwd_cuda(t.get(), sc.get(), wts, out_f.get(), saved, rm.get(),
                                        rv.get(), dims, opt, img_sums.get(), s));
  };

  const double e = elem_bytes;
  print_row({"SE tail fwd, unfused", rz::bench::time_gpu(s, unfused_fwd, 3, reps).median_ms, 12 * e,
             3 * e},
            hbm_gbps);
  print_row(
      {"SE tail fwd, fused", rz::bench::time_gpu(s, fused_fwd, 3, reps).median_ms, 4 * e, 3 * e},
      hbm_gbps);
  print_row({"SE tail fwd, fused, conv sums", rz::bench::time_gpu(s, fused_fwd_sums, 3, reps).median_ms,
             3 * e, 3 * e},
            hbm_gbps);
  print_row({"SE tail bwd, unfused", rz::bench::time_gpu(s, unfused_bwd, 3, reps).median_ms, 15 * e,
             5 * e},
            hbm_gbps);
  print_row(
      {"SE tail bwd, fused", rz::bench::time_gpu(s, fused_bwd, 3, reps).median_ms, 7 * e, 5 * e},
      hbm_gbps);

  // Full-size agreement (the two paths round differently: bf16 intermediates
  // in the unfused one, fp32 in the fused one).
  unfused_fwd();
  unfused_bwd();
  fused_fwd();
  fused_bwd();
  RZ_CUDA_CHECK(cudaStreamSynchronize(s));
  std::printf("  check: nmse(out fused, unfused) %.2e, nmse(dt fused, unfused) %.2e\n",
              nmse_bf16(out_f.download(), out_u.download()),
              nmse_bf16(dt_f.download(), dt_u.download()));

  // BN + ReLU at the C/4-channel sites (conv1 / conv2 outputs of the stage).
  const int64_t Cb = C / 4, nb = M * Cb;
  const double eb = static_cast<double>(nb) * sizeof(bf16);
  const rz::FusedBnOptions bopt{true, true, 0.1, 1e-5};
  const auto bn_unfused_fwd = [&] {
    RZ_CUDA_CHECK(rz::batch_norm_fwd_train_cuda(t.get(), gamma.get(), beta.get(), u.get(),
                                                mean.get(), invstd.get(), rm.get(), rv.get(), M, Cb,
                                                0.1, 1e-5, s));
    RZ_CUDA_CHECK(rz::relu_fwd_cuda(u.get(), out_u.get(), nb, s));
  };
  const auto bn_unfused_bwd = [&] {
    RZ_CUDA_CHECK(rz::relu_bwd_cuda(out_u.get(), dout.get(), g.get(), nb, s));
    RZ_CUDA_CHECK(rz::batch_norm_bwd_cuda(t.get(), g.get(), gamma.get(), mean.get(), invstd.get(),
                                          dt_u.get(), dgamma.get(), dbeta.get(), M, Cb, true, s));
  };
  const auto bn_fused_fwd = [&] {
    RZ_CUDA_CHECK(rz::fused_bn_fwd_cuda(t.get(), static_cast<const bf16*>(nullptr), gamma.get(),
                                        beta.get(), out_f.get(), fmean.get(), finvstd.get(),
                                        rm.get(), rv.get(), M, Cb, bopt, nullptr, s));
  };
  std::vector<double> bn_sums_h(static_cast<size_t>(2 * Cb), 0.0);
  for (size_t i = static_cast<size_t>(Cb); i < bn_sums_h.size(); ++i) bn_sums_h[i] = static_cast<double>(M);
  DeviceBuf<double> bn_sums(2 * Cb);
  bn_sums.upload(bn_sums_h.data());
  const auto bn_fused_fwd_sums = [&] {  // after a conv epilogue that summed the statistics
    RZ_CUDA_CHECK(rz::fused_bn_fwd_cuda(t.get(), static_cast<const bf16*>(nullptr), gamma.get(),
                                        beta.get(), out_f.get(), fmean.get(), finvstd.get(),
                                        rm.get(), rv.get(), M, Cb, bopt, bn_sums.get(), s));
  };
  const auto bn_fused_bwd = [&] {
    RZ_CUDA_CHECK(rz::fused_bn_bwd_cuda(t.get(), out_f.get(), dout.get(), gamma.get(), fmean.get(),
                                        finvstd.get(), dt_f.get(), static_cast<bf16*>(nullptr),
                                        dgamma.get(), dbeta.get(), M, Cb, bopt, s));
  };
  // One timed BN row: "BN+ReLU <what> C=<Cb>, <how>", traffic and compulsory
  // bytes in units of one bf16 tensor.
  const auto bn_row = [&](const char* what, const char* how, const auto& run, double traffic,
                          double compulsory) {
    char label[64];
    std::snprintf(label, sizeof label, "BN+ReLU %s C=%lld, %s", what, static_cast<long long>(Cb),
                  how);
    print_row({label, rz::bench::time_gpu(s, run, 3, reps).median_ms, traffic * eb,
               compulsory * eb},
              hbm_gbps);
  };
  bn_row("fwd", "unfused", bn_unfused_fwd, 6, 2);
  bn_row("fwd", "fused", bn_fused_fwd, 3, 2);
  bn_row("fwd", "fused, conv sums", bn_fused_fwd_sums, 2, 2);
  bn_row("bwd", "unfused", bn_unfused_bwd, 8, 4);
  bn_row("bwd", "fused", bn_fused_bwd, 7, 4);
  bn_unfused_fwd();
  bn_unfused_bwd();
  bn_fused_fwd();
  bn_fused_bwd();
  RZ_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<bf16> yf = out_f.download(), yu = out_u.download(), df = dt_f.download(),
                    dfu = dt_u.download();
  yf.resize(static_cast<size_t>(nb));
  yu.resize(static_cast<size_t>(nb));
  df.resize(static_cast<size_t>(nb));
  dfu.resize(static_cast<size_t>(nb));
  std::printf("  check: nmse(y fused, unfused) %.2e, nmse(dx fused, unfused) %.2e\n",
              nmse_bf16(yf, yu), nmse_bf16(df, dfu));
}

}  // namespace
#endif

int main(int argc, char** argv) {
  if (!rz::bench::have_gpu()) {
    std::printf("fused_bench: no CUDA device (or a build without CUDA); nothing to time\n");
    return 0;
  }
#if defined(RZ_HAVE_CUDA)
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: fused_bench [--reps N]\n");
      return 2;
    }
  }
  try {
    rz::CudaContext ctx(0, "rz.fused_bench");
    const double hbm = rz::bench::measured_hbm_gbps(ctx.stream());
    std::printf(
        "fused_bench: %s; measured HBM %.0f GB/s; batch 32, 512x512, bf16, training; "
        "median of %d runs, L2 flushed\n",
        rz::bench::device_line().c_str(), hbm, reps);
    const Stage stages[] = {{"layer1", 128, 128, 256},
                            {"layer2", 64, 64, 512},
                            {"layer3", 32, 32, 1024},
                            {"layer4", 16, 16, 2048}};
    const int64_t batch = 32;
    const int64_t max_n = batch * 128 * 128 * 256 + 2;
    const std::vector<bf16> noise = to_bf16(host_random(max_n, -1.0, 1.0, 7));
    for (const Stage& st : stages) bench_stage(st, batch, reps, hbm, ctx, noise);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fused_bench: %s\n", e.what());
    return 1;
  }
#else
  (void)argc;
  (void)argv;
#endif
  return 0;
}
