// Math shared by the fused batch-norm and fused squeeze-excitation twins
// (kernels/cpu/fused_bn.*, kernels/cpu/fused_se.*, kernels/cuda/fused_bn.*,
// kernels/cuda/fused_se.*): the CPU twins call these functions from ordinary
// C++, the CUDA kernels from device code, so the CPU tests exercise exactly the
// arithmetic and the row chunking the GPU uses.
//
// Notation: activations are NHWC viewed as [N segments, L rows, C channels]
// (the SE tail: a segment is one image, L = H*W; plain BN: N = 1, L = M rows).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/activation_math.h"
#include "kernels/common/hostdev.h"

namespace rz {

// Offset of element (segment n, row r, channel c) in a contiguous [N, L, C] tensor.
RZ_HD int64_t nlc_index(int64_t n, int64_t r, int64_t c, int64_t L, int64_t C) {
  return (n * L + r) * C + c;
}

// Row chunks of the segmented reductions: each segment's L rows are cut into
// `count` chunks of `rows` rows (the last one may be shorter). A function of L
// only, never of the device, so the reduction order (and the result) is the
// same on every GPU. Invariants for L >= 1: 1 <= count <= kFusedMaxChunks,
// (count - 1) * rows < L <= count * rows.
struct RowChunks {
  int64_t rows, count;
};
constexpr int64_t kFusedMinChunkRows = 256;
constexpr int64_t kFusedMaxChunks = 1024;

RZ_HD RowChunks fused_row_chunks(int64_t L) {
  if (L <= 0) return {1, 1};
  int64_t count = (L + kFusedMinChunkRows - 1) / kFusedMinChunkRows;
  if (count > kFusedMaxChunks) count = kFusedMaxChunks;
  const int64_t rows = (L + count - 1) / count;
  return {rows, (L + rows - 1) / rows};
}

// Rows of chunk `chunk` of a segment visited by row lane `lane` of `lanes`
// (the CUDA reduction and elementwise walks): first, first + lanes, ... while
// below end. Over all chunks and lanes every row 0..L-1 is visited once.
struct LaneRows {
  int64_t first, end;
};

RZ_HD LaneRows chunk_lane_rows(const RowChunks& ch, int64_t L, int64_t chunk, int64_t lane) {
  const int64_t r0 = chunk * ch.rows;
  return {r0 + lane, r0 + ch.rows < L ? r0 + ch.rows : L};
}

// Layouts of the segmented sums: the per-chunk partials [N][chunks][K][C] and
// the per-(segment, channel) totals [K][N][C] (k-th sum of segment n, channel c).
RZ_HD int64_t seg_partial_index(int64_t n, int64_t chunk, int64_t k, int64_t c, int64_t chunks,
                                int64_t K, int64_t C) {
  return ((n * chunks + chunk) * K + k) * C + c;
}

RZ_HD int64_t seg_sum_index(int64_t k, int64_t n, int64_t c, int64_t N, int64_t C) {
  return (k * N + n) * C + c;
}

// Batch statistics from one pass of shifted sums over m values of a channel:
// s1 = sum(x - shift), s2 = sum((x - shift)^2), inv_m = 1/m. Returns
// mean - shift = s1/m and the biased variance s2/m - (s1/m)^2 (clamped at 0).
// With shift a value of the channel (its first element), (s1/m)^2 =
// (mean - shift)^2 is one sample's squared distance from the mean, typically
// of the order of the variance, so the subtraction loses only a few digits
// (unlike E[x^2] - E[x]^2, which loses about 2*log10(|mean| / std)).
struct BnMoments {
  double mean_minus_shift, var;
};

RZ_HD BnMoments bn_moments_from_shifted(double s1, double s2, double inv_m) {
  const double d = s1 * inv_m;
  const double var = s2 * inv_m - d * d;
  return {d, var > 0.0 ? var : 0.0};
}

RZ_HD double bn_invstd(double var, double eps) {
  return 1.0 / std::sqrt(var + eps);
}

// PyTorch's running update r = (1 - momentum) r + momentum v; the running
// variance takes the unbiased var * M / (M - 1) (M == 1: the biased 0, as the
// unfused batch_norm kernels do).
RZ_HD double bn_running_update(double running, double value, double momentum) {
  return (1.0 - momentum) * running + momentum * value;
}

RZ_HD double bn_unbias_factor(int64_t M) {
  return M > 1 ? static_cast<double>(M) / static_cast<double>(M - 1) : 1.0;
}

// BN apply: u = (x - mean) * scale + beta with scale = gamma * invstd.
template <class S>
RZ_HD S bn_apply(S x, S mean, S scale, S beta) {
  return (x - mean) * scale + beta;
}

// Fused BN output from v = BN(x) + residual: relu(v) or v.
template <class S>
RZ_HD S bn_act(S v, bool relu_on) {
  return relu_on ? relu(v) : v;
}

// Gradient at v from the output y = act(v) and its gradient dy.
template <class S>
RZ_HD S bn_act_grad(S y, S dy, bool relu_on) {
  return relu_on ? relu_grad_from_output(y, dy) : dy;
}

// SE squeeze of u = BN(t) from the per-image shifted sum s1_nc = sum_hw(t - shift):
//   p[n,c] = mean_hw u = (s1_nc / HW - (mean - shift)) * scale + beta.
RZ_HD double se_pooled(double s1_nc, double inv_hw, double mean_minus_shift, double scale,
                       double beta) {
  return (s1_nc * inv_hw - mean_minus_shift) * scale + beta;
}

// SE block tail output: out = relu(u * gate + shortcut).
template <class S>
RZ_HD S se_tail_out(S u, S gate, S shortcut) {
  return relu(u * gate + shortcut);
}

// SE backward. With g = dout * [out > 0] (the gradient of the pre-ReLU sum,
// which is also dshortcut) and the per-image sums
//   g0 = sum_hw g,  g1 = sum_hw g (t - mean),  x1 = sum_hw (t - mean),
// the gate gradient is ds[n,c] = sum_hw g u = scale * g1 + beta * g0
// (u = (t - mean) * scale + beta).
RZ_HD double se_gate_grad(double scale, double beta, double g0, double g1) {
  return scale * g1 + beta * g0;
}

// The gradient reaching u = BN(t) is du = g * gate + dp / HW (the channel
// scale plus the squeeze's mean, dp = dL/dp[n,c]). Its per-image
// contributions to the BN backward sums sum(du) and sum(du * (t - mean)):
struct BnDySums {
  double sum_dy, sum_dy_xc;
};

RZ_HD BnDySums se_du_image_sums(double gate, double dp, double inv_hw, double g0, double g1,
                                double x1) {
  return {gate * g0 + dp, gate * g1 + dp * inv_hw * x1};
}

template <class S>
RZ_HD S se_du(S g, S gate, S dp_over_hw) {
  return g * gate + dp_over_hw;
}

}  // namespace rz
