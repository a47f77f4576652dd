#include "engine/cuda_conv.h"

#include <climits>
#include <sstream>

#include "engine/error.h"

namespace rz {

#if defined(RZ_HAVE_CUDA)

namespace {

cudnnDataType_t cudnn_type(DType t) {
  switch (t) {
    case DType::F32: return CUDNN_DATA_FLOAT;
    case DType::BF16: return CUDNN_DATA_BFLOAT16;
    default: break;
  }
  RZ_THROW("cuDNN convolution: unsupported dtype ", dtype_name(t), " (expected f32 or bf16)");
}

int to_int(int64_t v, const char* what) {
  RZ_CHECK(v >= 0 && v <= INT_MAX, "cuDNN convolution: ", what, " = ", v, " does not fit in int");
  return static_cast<int>(v);
}

// The math type the search starts from: full fp32 products unless TF32 is
// allowed; tensor cores for bf16 (fp32 accumulation either way).
cudnnMathType_t search_math_type(DType dtype, const CudnnConvOptions& opt) {
  if (dtype == DType::F32) return opt.allow_tf32 ? CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION : CUDNN_FMA_MATH;
  return CUDNN_TENSOR_OP_MATH;
}

// RAII descriptors; destruction failures cannot be reported and are ignored.
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { RZ_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { RZ_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { RZ_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// x [N,H,W,C] and y [N,OH,OW,K] as NHWC tensors, w [K,R,S,C] as an NHWC
// (= KRSC) filter, and the convolution (cross-correlation, fp32 compute).
struct ConvDescs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;

  ConvDescs(const Conv2dGeom& g, DType dtype, cudnnMathType_t math) {
    const cudnnDataType_t t = cudnn_type(dtype);
    const int N = to_int(g.N, "N"), H = to_int(g.H, "H"), W = to_int(g.W, "W"), C = to_int(g.C, "C");
    const int K = to_int(g.K, "K"), R = to_int(g.R, "R"), S = to_int(g.S, "S");
    const int OH = to_int(g.OH, "OH"), OW = to_int(g.OW, "OW");
    RZ_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.d, CUDNN_TENSOR_NHWC, t, N, C, H, W));
    RZ_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y.d, CUDNN_TENSOR_NHWC, t, N, K, OH, OW));
    RZ_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.d, t, CUDNN_TENSOR_NHWC, K, C, R, S));
    RZ_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.d, to_int(g.ph, "ph"), to_int(g.pw, "pw"),
                                                   to_int(g.sh, "sh"), to_int(g.sw, "sw"), 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    RZ_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.d, math));
    int on = 0, oc = 0, oh = 0, ow = 0;
    RZ_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv.d, x.d, w.d, &on, &oc, &oh, &ow));
    RZ_CHECK(on == N && oc == K && oh == OH && ow == OW, "cuDNN convolution: geometry output ", g.N,
             "x", g.OH, "x", g.OW, "x", g.K, " disagrees with cuDNN's ", on, "x", oh, "x", ow, "x", oc);
  }
};

ConvAlgoCache::Key make_key(const Conv2dGeom& g, DType dtype, ConvDirection dir,
                            const CudnnConvOptions& opt) {
  return {g.N, g.H, g.W, g.C, g.K, g.R, g.S, g.sh, g.sw, g.ph, g.pw,
          static_cast<int64_t>(dtype), static_cast<int64_t>(dir), opt.deterministic ? 1 : 0,
          opt.allow_tf32 ? 1 : 0, static_cast<int64_t>(opt.workspace_limit_bytes)};
}

const char* dir_name(ConvDirection dir) {
  switch (dir) {
    case ConvDirection::Forward: return "forward";
    case ConvDirection::BackwardData: return "backward-data";
    case ConvDirection::BackwardFilter: return "backward-filter";
  }
  return "?";
}

// The fastest measured result that is usable under the options. cuDNN returns
// the results sorted by time.
template <typename Perf>
ConvAlgoChoice pick(const Perf* perf, int n, DType dtype, ConvDirection dir,
                    const CudnnConvOptions& opt) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    if (p.memory > opt.workspace_limit_bytes) continue;
    if (opt.deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    if (dtype == DType::F32 && !opt.allow_tf32 && p.mathType != CUDNN_FMA_MATH) continue;
    return {static_cast<int>(p.algo), static_cast<int>(p.mathType), p.memory, p.time,
            p.determinism == CUDNN_DETERMINISTIC};
  }
  std::ostringstream os;
  for (int i = 0; i < n; ++i)
    os << " [algo " << static_cast<int>(perf[i].algo) << ": " << cudnnGetErrorString(perf[i].status)
       << ", " << perf[i].memory << " B, math " << static_cast<int>(perf[i].mathType)
       << (perf[i].determinism == CUDNN_DETERMINISTIC ? ", deterministic" : "") << "]";
  RZ_THROW("cuDNN convolution ", dir_name(dir), " (", dtype_name(dtype), "): no usable algorithm",
           opt.deterministic ? " (deterministic)" : "", ", workspace limit ",
           opt.workspace_limit_bytes, " B; candidates:", os.str());
}

// Measures every algorithm on the given buffers (a, b inputs; out is written)
// and returns the best usable one. Blocks until the measurement is done.
ConvAlgoChoice measure(CudaContext& ctx, ConvDescs& d, DType dtype, ConvDirection dir,
                       const CudnnConvOptions& opt, const void* a, const void* b, void* out) {
  constexpr int kMaxAlgos = 16;
  int returned = 0;
  void* ws = ctx.workspace(opt.workspace_limit_bytes);
  const size_t ws_bytes = opt.workspace_limit_bytes;
  switch (dir) {
    case ConvDirection::Forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
      RZ_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(ctx.cudnn(), d.x.d, a, d.w.d, b, d.conv.d,
                                                            d.y.d, out, kMaxAlgos, &returned, perf,
                                                            ws, ws_bytes));
      return pick(perf, returned, dtype, dir, opt);
    }
    case ConvDirection::BackwardData: {  // a = dy, b = w, out = dx
      cudnnConvolutionBwdDataAlgoPerf_t perf[kMaxAlgos];
      RZ_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(ctx.cudnn(), d.w.d, b, d.y.d, a,
                                                                 d.conv.d, d.x.d, out, kMaxAlgos,
                                                                 &returned, perf, ws, ws_bytes));
      return pick(perf, returned, dtype, dir, opt);
    }
    case ConvDirection::BackwardFilter: {  // a = x, b = dy, out = dw
      cudnnConvolutionBwdFilterAlgoPerf_t perf[kMaxAlgos];
      RZ_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(ctx.cudnn(), d.x.d, a, d.y.d, b,
                                                                   d.conv.d, d.w.d, out, kMaxAlgos,
                                                                   &returned, perf, ws, ws_bytes));
      return pick(perf, returned, dtype, dir, opt);
    }
  }
  RZ_THROW("cuDNN convolution: bad direction");
}

ConvAlgoChoice lookup_or_measure(CudaContext& ctx, ConvDescs& d, const Conv2dGeom& g, DType dtype,
                                 ConvDirection dir, const CudnnConvOptions& opt, const void* a,
                                 const void* b, void* out) {
  ConvAlgoCache& cache = ctx.conv_algo_cache();
  const auto key = make_key(g, dtype, dir, opt);
  if (const auto it = cache.entries.find(key); it != cache.entries.end()) {
    ++cache.hits;
    return it->second;
  }
  const ConvAlgoChoice c = measure(ctx, d, dtype, dir, opt, a, b, out);
  ++cache.misses;
  cache.entries.emplace(key, c);
  return c;
}

bool is_empty(const Conv2dGeom& g) {
  return g.N == 0 || g.H == 0 || g.W == 0 || g.C == 0 || g.K == 0 || g.R == 0 || g.S == 0 ||
         g.OH == 0 || g.OW == 0;
}

// Degenerate shapes (cuDNN rejects zero extents): the output is all zeros.
void zero_output(CudaContext& ctx, void* out, int64_t elements, DType dtype) {
  if (elements > 0)
    RZ_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(elements) * dtype_size(dtype), ctx.stream()));
}

// Stream-ordered scratch buffer for measuring without the caller's buffers.
struct Scratch {
  CudaContext& ctx;
  void* p = nullptr;
  Scratch(CudaContext& c, size_t bytes) : ctx(c) {
    RZ_CUDA_CHECK(cudaMallocAsync(&p, bytes == 0 ? 1 : bytes, ctx.stream()));
    RZ_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes == 0 ? 1 : bytes, ctx.stream()));
  }
  ~Scratch() {
    if (cudaFreeAsync(p, ctx.stream()) != cudaSuccess) cudaGetLastError();
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

}  // namespace

ConvAlgoChoice conv2d_cudnn_algo(CudaContext& ctx, const Conv2dGeom& g, DType dtype,
                                 ConvDirection dir, const CudnnConvOptions& opt) {
  RZ_CHECK(!is_empty(g), "conv2d_cudnn_algo: empty geometry has no algorithm");
  ctx.make_current();
  ConvDescs d(g, dtype, search_math_type(dtype, opt));
  ConvAlgoCache& cache = ctx.conv_algo_cache();
  if (const auto it = cache.entries.find(make_key(g, dtype, dir, opt)); it != cache.entries.end()) {
    ++cache.hits;
    return it->second;
  }
  const size_t es = dtype_size(dtype);
  Scratch x(ctx, static_cast<size_t>(g.N * g.H * g.W * g.C) * es);
  Scratch w(ctx, static_cast<size_t>(g.K * g.R * g.S * g.C) * es);
  Scratch y(ctx, static_cast<size_t>(g.N * g.OH * g.OW * g.K) * es);
  switch (dir) {
    case ConvDirection::Forward: return lookup_or_measure(ctx, d, g, dtype, dir, opt, x.p, w.p, y.p);
    case ConvDirection::BackwardData: return lookup_or_measure(ctx, d, g, dtype, dir, opt, y.p, w.p, x.p);
    case ConvDirection::BackwardFilter: return lookup_or_measure(ctx, d, g, dtype, dir, opt, x.p, y.p, w.p);
  }
  RZ_THROW("conv2d_cudnn_algo: bad direction");
}

// The part every direction shares: descriptors, the cached (or measured)
// algorithm with its math type, and the workspace; `call` then issues the
// cuDNN call with alpha = 1, beta = 0 (the output is overwritten).
template <typename Call>
void run_conv(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvDirection dir,
              const CudnnConvOptions& opt, const void* a, const void* b, void* out, Call call) {
  ConvDescs d(g, dtype, search_math_type(dtype, opt));
  const ConvAlgoChoice c = lookup_or_measure(ctx, d, g, dtype, dir, opt, a, b, out);
  RZ_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, static_cast<cudnnMathType_t>(c.math_type)));
  void* ws = ctx.workspace(c.workspace_bytes);
  const float alpha = 1.f, beta = 0.f;
  call(d, c, ws, &alpha, &beta);
}

void conv2d_fwd_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* x,
                      const void* w, void* y, const CudnnConvOptions& opt) {
  NvtxRange range("conv2d_fwd_cudnn");
  ctx.make_current();
  if (is_empty(g)) return zero_output(ctx, y, g.N * g.OH * g.OW * g.K, dtype);
  run_conv(ctx, g, dtype, ConvDirection::Forward, opt, x, w, y,
           [&](ConvDescs& d, const ConvAlgoChoice& c, void* ws, const float* alpha, const float* beta) {
             RZ_CUDNN_CHECK(cudnnConvolutionForward(
                 ctx.cudnn(), alpha, d.x.d, x, d.w.d, w, d.conv.d,
                 static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, c.workspace_bytes, beta, d.y.d, y));
           });
}

void conv2d_bwd_data_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* dy,
                           const void* w, void* dx, const CudnnConvOptions& opt) {
  NvtxRange range("conv2d_bwd_data_cudnn");
  ctx.make_current();
  if (is_empty(g)) return zero_output(ctx, dx, g.N * g.H * g.W * g.C, dtype);
  run_conv(ctx, g, dtype, ConvDirection::BackwardData, opt, dy, w, dx,
           [&](ConvDescs& d, const ConvAlgoChoice& c, void* ws, const float* alpha, const float* beta) {
             RZ_CUDNN_CHECK(cudnnConvolutionBackwardData(
                 ctx.cudnn(), alpha, d.w.d, w, d.y.d, dy, d.conv.d,
                 static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws, c.workspace_bytes, beta,
                 d.x.d, dx));
           });
}

void conv2d_bwd_filter_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* x,
                             const void* dy, void* dw, const CudnnConvOptions& opt) {
  NvtxRange range("conv2d_bwd_filter_cudnn");
  ctx.make_current();
  if (is_empty(g)) return zero_output(ctx, dw, g.K * g.R * g.S * g.C, dtype);
  run_conv(ctx, g, dtype, ConvDirection::BackwardFilter, opt, x, dy, dw,
           [&](ConvDescs& d, const ConvAlgoChoice& c, void* ws, const float* alpha, const float* beta) {
             RZ_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
                 ctx.cudnn(), alpha, d.x.d, x, d.y.d, dy, d.conv.d,
                 static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws, c.workspace_bytes, beta,
                 d.w.d, dw));
           });
}

#else  // !RZ_HAVE_CUDA

ConvAlgoChoice conv2d_cudnn_algo(CudaContext&, const Conv2dGeom&, DType, ConvDirection,
                                 const CudnnConvOptions&) {
  RZ_THROW("conv2d_cudnn_algo: built without CUDA");
}
void conv2d_fwd_cudnn(CudaContext&, const Conv2dGeom&, DType, const void*, const void*, void*,
                      const CudnnConvOptions&) {
  RZ_THROW("conv2d_fwd_cudnn: built without CUDA");
}
void conv2d_bwd_data_cudnn(CudaContext&, const Conv2dGeom&, DType, const void*, const void*, void*,
                           const CudnnConvOptions&) {
  RZ_THROW("conv2d_bwd_data_cudnn: built without CUDA");
}
void conv2d_bwd_filter_cudnn(CudaContext&, const Conv2dGeom&, DType, const void*, const void*,
                             void*, const CudnnConvOptions&) {
  RZ_THROW("conv2d_bwd_filter_cudnn: built without CUDA");
}

#endif

}  // namespace rz
