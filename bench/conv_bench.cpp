// conv_bench: our native convolution kernels (kernels/cuda/conv_native.cuh,
// every variant) against cuDNN (engine/cuda_conv.h, algorithm chosen by
// measurement) on every distinct convolution of seresnet152d, for the
// forward, backward-data and backward-filter passes.
//
//   conv_bench [--batch B (32)] [--img-size S (512)] [--reps N (20)] [--dtype bf16|fp32]
//              [--model NAME (seresnet152d)]
//
// Per layer shape and pass: median time over --reps runs (3 warm-ups, L2
// flushed before each run, bench/gpu_bench.h), achieved TFLOP/s (2*M*N*K of
// the implicit GEMM, the same for the three passes), the throughput ratio
// native / cuDNN (> 1: ours is faster) and the normalized MSE of our output
// against cuDNN's (a correctness guard, not a tolerance). "-" marks a
// combination the variant does not support (callers fall back to v1 or
// cuDNN); "v2" one that v3 declines (M or N <= 64, igemm::v3_declines) and
// the ladder runs on v2 (see v2's column). The summary gives, per pass and
// implementation, the geometric mean of the ratios over the shapes it ran,
// the network total (each shape's time times the number of layers with that
// shape) and the fraction of the device's nominal bf16 tensor-core peak that
// total achieves.
// Without a GPU it prints one line and exits 0. Nothing here asserts on time.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench/gpu_bench.h"
#include "kernels/cpu/conv2d.h"
#include "models/conv_shapes.h"
#include "models/seresnet.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "engine/cuda_context.h"
#include "engine/cuda_conv.h"
#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/common/conv_wgmma.h"
#include "kernels/cuda/conv_native.cuh"
#endif

namespace {

struct Args {
  int64_t batch = 32, img_size = 512;
  int reps = 20;
  bool bf16 = true;
  std::string model = "seresnet152d";
};

#if defined(RZ_HAVE_CUDA)

using namespace rz;

const ConvPass kPasses[] = {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad};
constexpr int kNumVariants = static_cast<int>(sizeof(kConvVariants) / sizeof(kConvVariants[0]));

const char* pass_name(ConvPass p) {
  return p == ConvPass::Fwd ? "fwd" : (p == ConvPass::Dgrad ? "dgrad" : "wgrad");
}

// A device buffer filled with values in [-1, 1) (a random block tiled over it).
class DevBuf {
 public:
  DevBuf(size_t elems, size_t elem_bytes, bool bf16, Generator& gen) : bytes_(elems * elem_bytes) {
    RZ_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(bytes_, 16)));
    constexpr size_t kBlock = size_t{1} << 20;
    std::vector<unsigned char> host(kBlock * elem_bytes);
    for (size_t i = 0; i < kBlock; ++i) {
      const float v = static_cast<float>(gen.uniform(-1.0, 1.0));
      if (bf16) {
        const rz::bf16 h = f32_to_bf16(v);
        std::memcpy(host.data() + i * 2, &h, 2);
      } else {
        std::memcpy(host.data() + i * 4, &v, 4);
      }
    }
    for (size_t off = 0; off < bytes_; off += host.size())
      RZ_CUDA_CHECK(cudaMemcpy(static_cast<unsigned char*>(p_) + off, host.data(),
                               std::min(host.size(), bytes_ - off), cudaMemcpyHostToDevice));
  }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

  std::vector<double> to_host(bool bf16) const {
    std::vector<unsigned char> raw(bytes_);
    RZ_CUDA_CHECK(cudaMemcpy(raw.data(), p_, bytes_, cudaMemcpyDeviceToHost));
    const size_t es = bf16 ? 2 : 4;
    std::vector<double> out(bytes_ / es);
    for (size_t i = 0; i < out.size(); ++i) {
      if (bf16) {
        rz::bf16 h;
        std::memcpy(&h, raw.data() + i * 2, 2);
        out[i] = bf16_to_f32(h);
      } else {
        float f;
        std::memcpy(&f, raw.data() + i * 4, 4);
        out[i] = f;
      }
    }
    return out;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

double nmse(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

cudaError_t run_native(ConvVariant v, ConvPass p, const Conv2dGeom& g, bool bf16, const void* x,
                       const void* w, const void* dy, void* out, cudaStream_t s) {
  if (bf16) {
    using T = rz::bf16;
    const T *tx = static_cast<const T*>(x), *tw = static_cast<const T*>(w),
            *tdy = static_cast<const T*>(dy);
    T* to = static_cast<T*>(out);
    if (p == ConvPass::Fwd) return conv2d_fwd_native<T>(v, g, tx, tw, to, s);
    if (p == ConvPass::Dgrad) return conv2d_bwd_data_native<T>(v, g, tdy, tw, to, s);
    return conv2d_bwd_filter_native<T>(v, g, tx, tdy, to, s);
  }
  const float *tx = static_cast<const float*>(x), *tw = static_cast<const float*>(w),
              *tdy = static_cast<const float*>(dy);
  float* to = static_cast<float*>(out);
  if (p == ConvPass::Fwd) return conv2d_fwd_native<float>(v, g, tx, tw, to, s);
  if (p == ConvPass::Dgrad) return conv2d_bwd_data_native<float>(v, g, tdy, tw, to, s);
  return conv2d_bwd_filter_native<float>(v, g, tx, tdy, to, s);
}

bool native_supported(ConvVariant v, ConvPass p, const Conv2dGeom& g, bool bf16) {
  return bf16 ? conv2d_native_supported<rz::bf16>(v, p, g)
              : conv2d_native_supported<float>(v, p, g);
}

// A shape v3 could run but declines (too narrow for its tile): v2 gets it.
bool declined_by_v3(ConvVariant v, ConvPass p, const Conv2dGeom& g, bool bf16) {
  return v == ConvVariant::V3 && bf16 && igemm::v3_geometry_ok(p, g) && !igemm::v3_supported(p, g);
}

void run_cudnn(CudaContext& ctx, ConvPass p, const Conv2dGeom& g, DType dt, const void* x,
               const void* w, const void* dy, void* out) {
  if (p == ConvPass::Fwd) conv2d_fwd_cudnn(ctx, g, dt, x, w, out);
  if (p == ConvPass::Dgrad) conv2d_bwd_data_cudnn(ctx, g, dt, dy, w, out);
  if (p == ConvPass::Wgrad) conv2d_bwd_filter_cudnn(ctx, g, dt, x, dy, out);
}

// Per pass and implementation (0 = cuDNN, 1.. = variants): accumulated totals.
struct Totals {
  double net_ms = 0, net_flop = 0;  // weighted by layer count
  double log_ratio = 0;             // sum of log(native / cuDNN throughput)
  int shapes = 0, skipped = 0;
  int declined = 0;  // of skipped: declined by v3, run by v2
};

int run(const Args& a) {
  CudaContext ctx(0, "rz.conv_bench");
  cudaDeviceProp prop{};
  RZ_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.device()));
  const double peak = bench::nominal_bf16_tflops(prop);
  const cudaStream_t s = ctx.stream();
  const DType dt = a.bf16 ? DType::BF16 : DType::F32;
  const size_t es = a.bf16 ? 2 : 4;

  const ResNetConfig cfg = resnet_config(a.model);
  const std::vector<ConvLayer> layers = resnet_conv_layers(cfg, a.batch, a.img_size);
  const std::vector<Conv2dGeom> shapes = resnet_conv_shapes(cfg, a.batch, a.img_size, true);
  std::printf(
      "conv_bench: %s convolutions, batch %lld, %lldx%lld, %s; %zu layers, %zu distinct shapes\n",
      a.model.c_str(), static_cast<long long>(a.batch), static_cast<long long>(a.img_size),
      static_cast<long long>(a.img_size), a.bf16 ? "bf16" : "fp32 (cuDNN: TF32 off)", layers.size(),
      shapes.size());
  std::printf("device: %s; nominal dense bf16 peak %.0f TFLOP/s; median of %d runs, L2 flushed\n",
              bench::device_line(ctx.device()).c_str(), peak, a.reps);
  std::printf("%-24s %4s %4s %5s %5s %3s %2s %3s %-5s | %9s %7s", "first layer", "N", "H", "C", "K",
              "RxS", "s", "cnt", "pass", "cudnn ms", "TFLOP/s");
  for (ConvVariant v : kConvVariants)
    std::printf(" | %6s ms %7s %6s %8s", conv_variant_name(v), "TFLOP/s", "ratio", "nmse");
  std::printf("\n");

  Totals tot[3][1 + kNumVariants];
  Generator gen(7);
  for (const Conv2dGeom& g : shapes) {
    int64_t count = 0;
    std::string first;
    for (const ConvLayer& l : layers)
      if (same_conv_geom(l.geom, g)) {
        if (count++ == 0) first = l.name;
      }
    DevBuf x(static_cast<size_t>(g.N * g.H * g.W * g.C), es, a.bf16, gen);
    DevBuf w(static_cast<size_t>(g.K * g.R * g.S * g.C), es, a.bf16, gen);
    DevBuf dy(static_cast<size_t>(g.N * g.OH * g.OW * g.K), es, a.bf16, gen);
    const double flop = 2.0 * static_cast<double>(g.N * g.OH * g.OW) * static_cast<double>(g.K) *
                        static_cast<double>(g.R * g.S * g.C);
    for (int pi = 0; pi < 3; ++pi) {
      const ConvPass p = kPasses[pi];
      const size_t out_elems = p == ConvPass::Fwd
                                   ? dy.bytes() / es
                                   : (p == ConvPass::Dgrad ? x.bytes() / es : w.bytes() / es);
      DevBuf ref_out(out_elems, es, a.bf16, gen), out(out_elems, es, a.bf16, gen);
      const bench::GpuTiming tc = bench::time_gpu(
          s, [&] { run_cudnn(ctx, p, g, dt, x.get(), w.get(), dy.get(), ref_out.get()); }, 3,
          a.reps);
      ctx.synchronize();
      const std::vector<double> ref = ref_out.to_host(a.bf16);
      const double cudnn_tflops = flop / (tc.median_ms * 1e9);
      tot[pi][0].net_ms += static_cast<double>(count) * tc.median_ms;
      tot[pi][0].net_flop += static_cast<double>(count) * flop;
      ++tot[pi][0].shapes;
      std::printf("%-24s %4lld %4lld %5lld %5lld %dx%d %2lld %3lld %-5s | %9.3f %7.1f",
                  first.c_str(), static_cast<long long>(g.N), static_cast<long long>(g.H),
                  static_cast<long long>(g.C), static_cast<long long>(g.K), static_cast<int>(g.R),
                  static_cast<int>(g.S), static_cast<long long>(g.sh),
                  static_cast<long long>(count), pass_name(p), tc.median_ms, cudnn_tflops);
      for (int vi = 0; vi < kNumVariants; ++vi) {
        const ConvVariant v = kConvVariants[vi];
        Totals& t = tot[pi][1 + vi];
        // A variant may also refuse at run time (v3 off Hopper, or without
        // sm_90a code in this build): shown as unsupported.
        const cudaError_t probe =
            native_supported(v, p, g, a.bf16)
                ? run_native(v, p, g, a.bf16, x.get(), w.get(), dy.get(), out.get(), s)
                : cudaErrorInvalidValue;
        if (probe == cudaErrorInvalidValue) {
          (void)cudaGetLastError();
          ++t.skipped;
          const bool declined = declined_by_v3(v, p, g, a.bf16);
          if (declined) ++t.declined;
          std::printf(" | %9s %7s %6s %8s", declined ? "v2" : "-", "-", "-", "-");
          continue;
        }
        RZ_CUDA_CHECK(probe);
        const bench::GpuTiming tn = bench::time_gpu(
            s,
            [&] {
              RZ_CUDA_CHECK(run_native(v, p, g, a.bf16, x.get(), w.get(), dy.get(), out.get(), s));
            },
            3, a.reps);
        ctx.synchronize();
        const double err = nmse(out.to_host(a.bf16), ref);
        const double tflops = flop / (tn.median_ms * 1e9);
        const double ratio = tc.median_ms / tn.median_ms;
        t.net_ms += static_cast<double>(count) * tn.median_ms;
        t.net_flop += static_cast<double>(count) * flop;
        t.log_ratio += std::log(ratio);
        ++t.shapes;
        std::printf(" | %9.3f %7.1f %6.2f %8.1e", tn.median_ms, tflops, ratio, err);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  std::printf(
      "\nsummary (network totals weight each shape by its layer count; ratio = native / cuDNN "
      "throughput)\n");
  std::printf("%-5s %-6s %7s %12s %9s %8s %9s\n", "pass", "impl", "shapes", "geomean", "net ms",
              "TFLOP/s", "of peak");
  for (int pi = 0; pi < 3; ++pi)
    for (int ii = 0; ii <= kNumVariants; ++ii) {
      const Totals& t = tot[pi][ii];
      const char* name = ii == 0 ? "cudnn" : conv_variant_name(kConvVariants[ii - 1]);
      const double tflops = t.net_ms > 0 ? t.net_flop / (t.net_ms * 1e9) : 0;
      char geo[32] = "1 (base)";
      if (ii > 0) {
        if (t.shapes > 0)
          std::snprintf(geo, sizeof geo, "%.3f", std::exp(t.log_ratio / t.shapes));
        else
          std::snprintf(geo, sizeof geo, "-");
      }
      std::printf("%-5s %-6s %3d/%-3d %12s %9.2f %8.1f %8.1f%%", pass_name(kPasses[pi]), name,
                  t.shapes, t.shapes + t.skipped, geo, t.net_ms, tflops,
                  peak > 0 ? 100.0 * tflops / peak : 0.0);
      if (t.skipped > 0) {
        std::printf("  (%d unsupported shapes not in the totals", t.skipped);
        if (t.declined > 0) std::printf(", %d of them declined to v2", t.declined);
        std::printf(")");
      }
      std::printf("\n");
    }
  return 0;
}

#endif  // RZ_HAVE_CUDA

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "conv_bench: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--batch")
      a.batch = std::max<int64_t>(1, std::stoll(next()));
    else if (arg == "--img-size")
      a.img_size = std::stoll(next());
    else if (arg == "--reps")
      a.reps = std::max(1, std::stoi(next()));
    else if (arg == "--model")
      a.model = next();
    else if (arg == "--dtype") {
      const std::string d = next();
      if (d != "bf16" && d != "fp32") {
        std::fprintf(stderr, "conv_bench: --dtype must be bf16 or fp32, got '%s'\n", d.c_str());
        return 2;
      }
      a.bf16 = d == "bf16";
    } else {
      std::fprintf(stderr,
                   "usage: conv_bench [--batch B] [--img-size S] [--reps N] [--dtype bf16|fp32] "
                   "[--model NAME]\n");
      return 2;
    }
  }
  if (!rz::bench::have_gpu()) {
    std::printf("conv_bench: no CUDA device (or a build without CUDA); nothing to measure\n");
    return 0;
  }
#if defined(RZ_HAVE_CUDA)
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conv_bench: %s\n", e.what());
    return 1;
  }
#else
  return 0;
#endif
}
