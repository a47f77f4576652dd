#include "engine/conv_autotune.h"
#include "engine/json_depth.h"

#include "engine/atomic_file.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "engine/error.h"

#if defined(RZ_HAVE_CUDA)
#include "engine/cuda_check.h"
#include "engine/cuda_conv.h"
#include "kernels/cuda/conv_native.cuh"
#include "kernels/cuda/fused_bn.cuh"
#endif

namespace rz {

ConvImpl parse_conv_impl(const std::string& s) {
  if (s == "cudnn") return ConvImpl::Cudnn;
  if (s == "native") return ConvImpl::Native;
  if (s == "auto") return ConvImpl::Auto;
  RZ_THROW("conv implementation must be cudnn, native or auto, got '", s, "'");
}

const char* conv_impl_name(ConvImpl impl) {
  switch (impl) {
    case ConvImpl::Cudnn: return "cudnn";
    case ConvImpl::Native: return "native";
    case ConvImpl::Auto: return "auto";
  }
  return "unknown";
}

const char* conv_pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::Fwd: return "fwd";
    case ConvPass::Dgrad: return "dgrad";
    case ConvPass::Wgrad: return "wgrad";
  }
  return "unknown";
}

const char* conv_fusion_name(ConvFusion f) {
  switch (f) {
    case ConvFusion::None: return "";
    case ConvFusion::BnStats: return "+bnstats";
    case ConvFusion::BnEval: return "+bneval";
  }
  return "+unknown";
}

bool conv_variant_validated(int variant, ConvPass pass) {
  // Listed here once scripts/gpu_check.sh passes the native-conv GPU tests
  // (all seresnet152d shapes, memcheck and racecheck clean) for a variant
  // and pass. On the H200 (bench/RESULTS.md, 2026-12-04) v1, v2 and v3 pass
  // their tests and memcheck, but racecheck of the all-shape sweeps has not
  // finished, so none is listed yet.
  (void)variant;
  (void)pass;
  return false;
}

std::string conv_autotune_cache_path() {
  if (const char* p = std::getenv("RZ_CONV_CACHE"); p && *p) return p;
  namespace fs = std::filesystem;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "ranzcr" / "conv_autotune.json").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".cache" / "ranzcr" / "conv_autotune.json").string();
}

#if defined(RZ_HAVE_CUDA)

namespace {

ConvDirection direction(ConvPass pass) {
  switch (pass) {
    case ConvPass::Fwd: return ConvDirection::Forward;
    case ConvPass::Dgrad: return ConvDirection::BackwardData;
    case ConvPass::Wgrad: return ConvDirection::BackwardFilter;
  }
  return ConvDirection::Forward;
}

template <typename F> decltype(auto) with_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(bf16{});
    default: RZ_THROW("native conv: unsupported dtype ", dtype_name(dtype), " (f32 or bf16)");
  }
}

bool supported(int variant, ConvPass pass, const Conv2dGeom& g, DType dtype) {
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    return conv2d_native_supported<T>(static_cast<ConvVariant>(variant), pass, g);
  });
}

cudaError_t launch_native(int variant, const Conv2dGeom& g, DType dtype, ConvPass pass,
                          const void* a, const void* b, void* out, cudaStream_t stream) {
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto v = static_cast<ConvVariant>(variant);
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    switch (pass) {
      case ConvPass::Fwd: return conv2d_fwd_native<T>(v, g, pa, pb, po, stream);
      case ConvPass::Dgrad: return conv2d_bwd_data_native<T>(v, g, pa, pb, po, stream);
      case ConvPass::Wgrad: return conv2d_bwd_filter_native<T>(v, g, pa, pb, po, stream);
    }
    return cudaErrorInvalidValue;
  });
}

void run_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass, const void* a,
               const void* b, void* out) {
  CudnnConvOptions o;
  o.deterministic = ctx.options.deterministic;
  o.allow_tf32 = ctx.options.allow_tf32;
  switch (pass) {
    case ConvPass::Fwd: conv2d_fwd_cudnn(ctx, g, dtype, a, b, out, o); break;
    case ConvPass::Dgrad: conv2d_bwd_data_cudnn(ctx, g, dtype, a, b, out, o); break;
    case ConvPass::Wgrad: conv2d_bwd_filter_cudnn(ctx, g, dtype, a, b, out, o); break;
  }
}

// Device buffers for timing: stream-ordered, zero-filled, freed on the stream.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  Scratch(size_t bytes, cudaStream_t stream) : s(stream) {
    RZ_CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(bytes, 16), s));
    RZ_CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 16), s));
  }
  ~Scratch() { cudaFreeAsync(p, s); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Median of 5 event-timed runs after one warm-up; -1 when `run` reports the
// combination unsupported (cudaErrorInvalidValue from a native launcher).
template <typename Run> double time_ms(cudaStream_t stream, Run run) {
  if (!run()) return -1;
  cudaEvent_t t0, t1;
  RZ_CUDA_CHECK(cudaEventCreate(&t0));
  RZ_CUDA_CHECK(cudaEventCreate(&t1));
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    RZ_CUDA_CHECK(cudaEventRecord(t0, stream));
    run();
    RZ_CUDA_CHECK(cudaEventRecord(t1, stream));
    RZ_CUDA_CHECK(cudaEventSynchronize(t1));
    float t = 0;
    RZ_CUDA_CHECK(cudaEventElapsedTime(&t, t0, t1));
    ms.push_back(t);
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The process-wide table of Auto choices, backed by the JSON file.
struct AutotuneCache {
  std::mutex mu;
  bool loaded = false;
  std::map<std::string, nlohmann::json> entries;

  void load_locked() {
    if (loaded) return;
    loaded = true;
    const std::string path = conv_autotune_cache_path();
    std::ifstream f(path);
    if (!f) return;
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto j = json_depth(text) <= kMaxJsonDepth
                       ? nlohmann::json::parse(text, nullptr, false)
                       : nlohmann::json(nlohmann::json::value_t::discarded);
    if (j.is_discarded() || !j.is_object()) {
      std::fprintf(stderr, "ranzcr: ignoring unreadable conv autotune cache %s (it will be rewritten)\n",
                   path.c_str());
      return;
    }
    for (const auto& [k, v] : j.items()) entries[k] = v;
  }

  void save_locked() {
    namespace fs = std::filesystem;
    const fs::path path = conv_autotune_cache_path();
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : entries) j[k] = v;
    try {
      write_file_atomic(path.string(), j.dump(1) + "\n", "conv autotune cache");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ranzcr: %s\n", e.what());  // a cache: losing it costs only time
    }
  }
};

AutotuneCache& autotune_cache() {
  static AutotuneCache c;
  return c;
}

std::string cache_key(const CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                      ConvFusion fusion) {
  char buf[352];
  std::snprintf(buf, sizeof buf, "%s|sm_%d%d|N%lld H%lld W%lld C%lld K%lld R%lld S%lld s%lldx%lld p%lldx%lld|%s|%s%s|v%d",
                ctx.props().name.c_str(), ctx.props().cc_major, ctx.props().cc_minor,
                static_cast<long long>(g.N), static_cast<long long>(g.H), static_cast<long long>(g.W),
                static_cast<long long>(g.C), static_cast<long long>(g.K), static_cast<long long>(g.R),
                static_cast<long long>(g.S), static_cast<long long>(g.sh), static_cast<long long>(g.sw),
                static_cast<long long>(g.ph), static_cast<long long>(g.pw), dtype_name(dtype),
                conv_pass_name(pass), conv_fusion_name(fusion), kConvNativeVersion);
  return buf;
}

// The BN that follows a fused forward convolution in the timings (fp32
// per-channel vectors, zero-filled: the values do not matter for timing).
struct BnScratch {
  Scratch gamma, beta, rm, rv, sums, y2;
  BnScratch(const Conv2dGeom& g, size_t y_bytes, cudaStream_t s)
      : gamma(static_cast<size_t>(g.K) * 4, s), beta(static_cast<size_t>(g.K) * 4, s),
        rm(static_cast<size_t>(g.K) * 4, s), rv(static_cast<size_t>(g.K) * 4, s),
        sums(static_cast<size_t>(g.K) * 16, s), y2(y_bytes, s) {}
};

// The BN pass(es) after the convolution: training BN + ReLU (with the sums
// when the convolution produced them) or, for BnEval after cuDNN, the eval BN
// + ReLU apply pass.
cudaError_t bn_after_conv(DType dtype, const Conv2dGeom& g, ConvFusion fusion, const void* y,
                          const double* sums, BnScratch& bn, cudaStream_t s) {
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t M = g.N * g.OH * g.OW;
    FusedBnOptions o;
    o.training = fusion == ConvFusion::BnStats;
    o.relu = true;
    return fused_bn_fwd_cuda<T>(static_cast<const T*>(y), nullptr, static_cast<float*>(bn.gamma.p),
                                static_cast<float*>(bn.beta.p), static_cast<T*>(bn.y2.p), nullptr,
                                nullptr, o.training ? nullptr : static_cast<float*>(bn.rm.p),
                                o.training ? nullptr : static_cast<float*>(bn.rv.p), M, g.K, o,
                                sums, s);
  });
}

// One fused forward by native variant `variant`: BnStats = the convolution
// with statistics + the BN apply pass; BnEval = the convolution with the
// folded BN and ReLU.
cudaError_t launch_native_fused(int variant, const Conv2dGeom& g, DType dtype, ConvFusion fusion,
                                const void* x, const void* w, void* y, BnScratch& bn,
                                cudaStream_t s) {
  ConvFwdFusion f;
  if (fusion == ConvFusion::BnStats) f.sums = static_cast<double*>(bn.sums.p);
  if (fusion == ConvFusion::BnEval) {
    f.scale = static_cast<const float*>(bn.gamma.p);
    f.shift = static_cast<const float*>(bn.beta.p);
    f.relu = true;
  }
  cudaError_t st = with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    return conv2d_fwd_native_fused<T>(static_cast<ConvVariant>(variant), g,
                                      static_cast<const T*>(x), static_cast<const T*>(w),
                                      static_cast<T*>(y), f, s);
  });
  if (st == cudaSuccess && fusion == ConvFusion::BnStats)
    st = bn_after_conv(dtype, g, fusion, y, f.sums, bn, s);
  return st;
}

// Times cuDNN and the native variants allowed by `eligible` on scratch
// buffers; with a fusion, each candidate includes the BN work that follows.
template <typename Eligible>
ConvTimingRow measure(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                      ConvFusion fusion, Eligible eligible) {
  RZ_CHECK(fusion == ConvFusion::None || pass == ConvPass::Fwd, "conv autotune: ",
           conv_fusion_name(fusion), " needs the forward pass");
  ctx.make_current();
  const cudaStream_t s = ctx.stream();
  const size_t es = dtype_size(dtype);
  const size_t y_bytes = static_cast<size_t>(g.N * g.OH * g.OW * g.K) * es;
  Scratch x(static_cast<size_t>(g.N * g.H * g.W * g.C) * es, s);
  Scratch w(static_cast<size_t>(g.K * g.R * g.S * g.C) * es, s);
  Scratch y(y_bytes, s);
  std::unique_ptr<BnScratch> bn;
  if (fusion != ConvFusion::None) bn = std::make_unique<BnScratch>(g, y_bytes, s);
  const void *a = x.p, *b = w.p;
  void* out = y.p;
  if (pass == ConvPass::Dgrad) a = y.p, b = w.p, out = x.p;
  if (pass == ConvPass::Wgrad) a = x.p, b = y.p, out = w.p;
  ConvTimingRow row;
  row.geom = g;
  row.pass = pass;
  row.fusion = fusion;
  row.cudnn_ms = time_ms(s, [&] {
    run_cudnn(ctx, g, dtype, pass, a, b, out);
    if (bn) RZ_CUDA_CHECK(bn_after_conv(dtype, g, fusion, out, nullptr, *bn, s));
    return true;
  });
  double best = row.cudnn_ms;
  for (ConvVariant v : kConvVariants) {
    const int vi = static_cast<int>(v);
    double ms = -1;
    if (supported(vi, pass, g, dtype) && eligible(vi))
      ms = time_ms(s, [&] {
        const cudaError_t st = bn ? launch_native_fused(vi, g, dtype, fusion, a, b, out, *bn, s)
                                  : launch_native(vi, g, dtype, pass, a, b, out, s);
        if (st == cudaErrorInvalidValue) {
          cudaGetLastError();
          return false;
        }
        RZ_CUDA_CHECK(st);
        return true;
      });
    row.native_ms.push_back(ms);
    if (ms >= 0 && ms < best) best = ms, row.pick = vi;
  }
  return row;
}

}  // namespace

std::vector<int> native_conv_variants() {
  std::vector<int> out;
  for (ConvVariant v : kConvVariants) out.push_back(static_cast<int>(v));
  return out;
}

std::string native_variant_name(int variant) { return conv_variant_name(static_cast<ConvVariant>(variant)); }

ConvTimingRow conv_time_all(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                            ConvFusion fusion) {
  return measure(ctx, g, dtype, pass, fusion, [](int) { return true; });
}

ConvPlan conv_plan(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                   ConvFusion fusion) {
  RZ_CHECK(fusion == ConvFusion::None || pass == ConvPass::Fwd, "conv_plan: ",
           conv_fusion_name(fusion), " needs the forward pass");
  switch (ctx.options.conv_impl) {
    case ConvImpl::Cudnn: return {};
    case ConvImpl::Native: {
      ConvPlan p;
      for (ConvVariant v : kConvVariants)
        if (conv_native_available(v) && supported(static_cast<int>(v), pass, g, dtype))
          p.variant = static_cast<int>(v);
      return p;
    }
    case ConvImpl::Auto: break;
  }
  const bool any_unvalidated = ctx.options.allow_unvalidated_kernels;
  auto eligible = [&](int v) { return any_unvalidated || conv_variant_validated(v, pass); };
  bool any = false;
  for (ConvVariant v : kConvVariants) any = any || eligible(static_cast<int>(v));
  if (!any) return {};  // nothing to measure: cuDNN
  AutotuneCache& cache = autotune_cache();
  const std::string key = cache_key(ctx, g, dtype, pass, fusion);
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    cache.load_locked();
    if (const auto it = cache.entries.find(key); it != cache.entries.end() && it->second.contains("variant")) {
      const int v = it->second["variant"].get<int>();
      if (v == 0 || eligible(v)) return {v};
    }
  }
  const ConvTimingRow row = measure(ctx, g, dtype, pass, fusion, eligible);
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.entries[key] = nlohmann::json{{"variant", row.pick}, {"cudnn_ms", row.cudnn_ms}, {"native_ms", row.native_ms}};
  cache.save_locked();
  return {row.pick};
}

// A native variant refuses a call it cannot run here (misaligned operands for
// v2/v3, a non-Hopper device or a build without sm_90a code for v3) with
// cudaErrorInvalidValue before enqueueing anything: the next lower variant
// then gets it, and cuDNN after the last.
namespace {
template <typename Launch>
bool run_down_the_ladder(int variant, Launch launch) {
  for (int v = variant; v >= 1; --v) {
    const cudaError_t st = launch(v);
    if (st != cudaErrorInvalidValue) {
      RZ_CUDA_CHECK(st);
      return true;
    }
    cudaGetLastError();
  }
  return false;
}
}  // namespace

void conv_run(CudaContext& ctx, const ConvPlan& plan, const Conv2dGeom& g, DType dtype,
              ConvPass pass, const void* a, const void* b, void* out) {
  const bool ran = run_down_the_ladder(plan.variant, [&](int v) {
    if (!supported(v, pass, g, dtype)) return cudaErrorInvalidValue;
    return launch_native(v, g, dtype, pass, a, b, out, ctx.stream());
  });
  if (!ran) run_cudnn(ctx, g, dtype, pass, a, b, out);
}

bool conv_run_fused(CudaContext& ctx, const ConvPlan& plan, const Conv2dGeom& g, DType dtype,
                    const void* x, const void* w, void* y, const ConvFwdFusion& f) {
  return run_down_the_ladder(plan.variant, [&](int v) {
    return with_type(dtype, [&](auto tag) {
      using T = decltype(tag);
      return conv2d_fwd_native_fused<T>(static_cast<ConvVariant>(v), g, static_cast<const T*>(x),
                                        static_cast<const T*>(w), static_cast<T*>(y), f,
                                        ctx.stream());
    });
  });
}

#else  // !RZ_HAVE_CUDA

std::vector<int> native_conv_variants() { return {}; }
std::string native_variant_name(int variant) { return "v" + std::to_string(variant); }

ConvPlan conv_plan(CudaContext&, const Conv2dGeom&, DType, ConvPass, ConvFusion) {
  RZ_THROW("conv_plan: built without CUDA");
}
bool conv_run_fused(CudaContext&, const ConvPlan&, const Conv2dGeom&, DType, const void*,
                    const void*, void*, const ConvFwdFusion&) {
  RZ_THROW("conv_run_fused: built without CUDA");
}
void conv_run(CudaContext&, const ConvPlan&, const Conv2dGeom&, DType, ConvPass, const void*,
              const void*, void*) {
  RZ_THROW("conv_run: built without CUDA");
}
ConvTimingRow conv_time_all(CudaContext&, const Conv2dGeom&, DType, ConvPass, ConvFusion) {
  RZ_THROW("conv_time_all: built without CUDA");
}

#endif

}  // namespace rz
