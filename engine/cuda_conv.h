// 2-D convolution through cuDNN (the expert baseline and fallback for our own
// conv kernels), with the meaning of the CPU twins in kernels/cpu/conv2d.h:
// NHWC activations, KRSC weights, no bias, cross-correlation (no flip), the
// stride and zero padding of Conv2dGeom, dilation 1, groups 1.
//
// Uses cuDNN's legacy descriptor API (cudnnConvolutionForward / BackwardData /
// BackwardFilter) with CUDNN_TENSOR_NHWC tensors and filters.
// Data types: F32 (fp32 math; TF32 tensor cores only when
// CudnnConvOptions::allow_tf32) and BF16 (bf16 storage, fp32 accumulation,
// tensor cores). Every output is overwritten (beta = 0), never accumulated.
//
// Algorithms are chosen by measurement (cudnnFind*AlgorithmEx, which runs each
// candidate on the real buffers) the first time a (geometry, dtype, direction,
// options) key is seen, then read from the context's ConvAlgoCache. Options:
//   deterministic: only algorithms cuDNN reports as CUDNN_DETERMINISTIC, so
//                  two runs on the same inputs give bitwise-identical outputs;
//   allow_tf32:    fp32 convolutions may round inputs to TF32 on tensor cores
//                  (off: CUDNN_FMA_MATH, full fp32 products);
//   workspace_limit_bytes: algorithms needing more workspace are skipped.
// All pointers are device pointers; work is issued on ctx.stream() and is
// asynchronous, except the first (measuring) call for a key, which blocks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>

#include "engine/cuda_context.h"
#include "engine/dtype.h"
#include "kernels/cpu/conv2d.h"

namespace rz {

enum class ConvDirection : uint8_t { Forward, BackwardData, BackwardFilter };

struct CudnnConvOptions {
  bool deterministic = false;
  bool allow_tf32 = false;
  size_t workspace_limit_bytes = size_t{256} << 20;
};

// One measured choice: the cuDNN algorithm enum value (cudnnConvolutionFwdAlgo_t,
// ...BwdDataAlgo_t or ...BwdFilterAlgo_t as an int, by direction), the math type
// it was measured with (cudnnMathType_t), its workspace and measured time.
struct ConvAlgoChoice {
  int algo = -1;
  int math_type = 0;
  size_t workspace_bytes = 0;
  float time_ms = 0.f;
  bool deterministic = false;
};

// Per-context cache of measured algorithms. `misses` counts measurements,
// `hits` lookups answered from the cache.
struct ConvAlgoCache {
  using Key = std::array<int64_t, 16>;
  std::map<Key, ConvAlgoChoice> entries;
  int64_t hits = 0;
  int64_t misses = 0;
  size_t size() const { return entries.size(); }
  void clear() { entries.clear(); }
};

// y[N, OH, OW, K] = conv(x[N, H, W, C], w[K, R, S, C]).
void conv2d_fwd_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* x,
                      const void* w, void* y, const CudnnConvOptions& opt = {});
// dx[N, H, W, C] = d(sum dy*y)/dx.
void conv2d_bwd_data_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* dy,
                           const void* w, void* dx, const CudnnConvOptions& opt = {});
// dw[K, R, S, C] = d(sum dy*y)/dw.
void conv2d_bwd_filter_cudnn(CudaContext& ctx, const Conv2dGeom& g, DType dtype, const void* x,
                             const void* dy, void* dw, const CudnnConvOptions& opt = {});

// The algorithm the calls above use for this key: from the cache, or measured
// now (on scratch buffers of the right sizes, allocated and freed on the
// stream) and cached. Exposed for tests and benchmarks.
ConvAlgoChoice conv2d_cudnn_algo(CudaContext& ctx, const Conv2dGeom& g, DType dtype,
                                 ConvDirection dir, const CudnnConvOptions& opt = {});

}  // namespace rz
