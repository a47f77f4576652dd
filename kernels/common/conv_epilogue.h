// What a native forward convolution does with its outputs besides storing
// them: the epilogue fusions of kernels/cuda/conv_native.cuh.
//
// For y[m][k] (m = (n, oh, ow) the GEMM row, k the output channel) with fp32
// accumulator acc:
//   affine  v = acc * scale[k] + shift[k]     (eval-mode BN folded in; both
//                                              pointers set or neither)
//   relu    v = max(v, 0)
//   store   y[m][k] = round_to_T(v)
//   stats   per M-tile t (the variant's block height BM, rows
//           t*BM .. min(M, (t+1)*BM) - 1):
//             stats[(t*2 + 0)*K + k] = sum of the stored y[m][k] (as fp32)
//             stats[(t*2 + 1)*K + k] = sum of their squares
//           written exactly once for every t < ceil(M / BM) and k < K (plain
//           stores, no atomics: the result does not depend on scheduling);
//           conv_stats_finalize (kernels/cuda/conv_native.cuh) adds the tiles
//           in order, in double, into the batch mean and biased variance
//           that training-mode BN needs, so BN skips its statistics pass.
// The statistics are taken from the stored (rounded) values, i.e. exactly
// what a separate BN statistics pass would read.
#pragma once

#include "kernels/common/activation_math.h"
#include "kernels/common/hostdev.h"

namespace rz {

struct ConvFwdEpilogue {
  const float* scale = nullptr;  // [K] or null
  const float* shift = nullptr;  // [K] or null (set together with scale)
  bool relu = false;
  float* stats = nullptr;  // [ceil(M / BM)][2][K] or null
  bool affine() const { return scale != nullptr; }
  bool any() const { return scale != nullptr || relu || stats != nullptr; }
};

// What a caller asks of a fused forward convolution
// (conv2d_fwd_native_fused in kernels/cuda/conv_native.cuh): the affine and
// ReLU above, and the statistics finalized per segment of M / segments
// consecutive rows (segments = N: per image, what the SE squeeze needs; 1:
// the whole batch, what BN needs):
//   sums[(0 * segments + s) * K + k] = sum of the stored y[m][k], m in segment s
//   sums[(1 * segments + s) * K + k] = the sum of squares
// (double [2][segments][K]; null: none). With segments > 1 every segment must
// be a whole number of M-tiles (else the call is refused).
struct ConvFwdFusion {
  const float* scale = nullptr;  // [K]
  const float* shift = nullptr;  // [K]
  bool relu = false;
  double* sums = nullptr;  // [2][segments][K]
  int64_t segments = 1;
};

// The value an epilogue stores for one accumulator (before rounding to T);
// S is float on the GPU, the element type in the CPU GEMM's epilogue.
template <class S, class I>
RZ_HD S conv_epilogue_value(S acc, const S* scale, const S* shift, bool relu, I k) {
  S v = acc;
  if (scale != nullptr) v = v * scale[k] + shift[k];
  if (relu) v = rz::relu(v);  // NaN propagates, as in the unfused ReLU
  return v;
}

}  // namespace rz
