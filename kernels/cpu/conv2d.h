// 2-D convolution on the CPU, NHWC activations and KRSC weights, no bias:
//   y[n, oh, ow, k] = sum_{r, s, c} x[n, oh*sh - ph + r, ow*sw - pw + s, c] * w[k, r, s, c]
// (taps outside the input read zero). Computed as im2col + GEMM, with a
// direct-GEMM fast path for 1x1 / stride 1 / no padding, where the NHWC input
// already is the [N*H*W, C] im2col matrix.
#pragma once

#include "kernels/cpu/gemm.h"

#include <cstdint>

namespace rz {

struct Conv2dGeom {
  int64_t N, H, W, C;       // input
  int64_t K, R, S;          // output channels, kernel height, kernel width
  int64_t sh, sw, ph, pw;   // stride, zero padding
  int64_t OH, OW;           // output
  int64_t rows() const { return N * OH * OW; }  // GEMM M
  int64_t taps() const { return R * S * C; }    // GEMM K (reduction)
  bool is_pointwise() const { return R == 1 && S == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

// OH = (H + 2*ph - R) / sh + 1 (floor), likewise OW; the caller checks OH, OW >= 1.
Conv2dGeom make_conv2d_geom(int64_t N, int64_t H, int64_t W, int64_t C, int64_t K, int64_t R,
                            int64_t S, int64_t sh, int64_t sw, int64_t ph, int64_t pw);

// Writes y[N, OH, OW, K].
// epilogue: applied to y per output channel as the GEMM finishes each tile
// (gemm.h): eval-mode BN folded into a scale and shift, and ReLU.
template <typename T>
void conv2d_fwd_cpu(const T* x, const T* w, T* y, const Conv2dGeom& g, const GemmEpilogue<T>* epilogue = nullptr);
// Writes dx[N, H, W, C] = d(sum dy*y)/dx.
template <typename T> void conv2d_bwd_data_cpu(const T* dy, const T* w, T* dx, const Conv2dGeom& g);
// Writes dw[K, R, S, C] = d(sum dy*y)/dw.
template <typename T> void conv2d_bwd_weight_cpu(const T* x, const T* dy, T* dw, const Conv2dGeom& g);

// The im2col gather and its adjoint, exposed for tests:
// col[(n, oh, ow), (r, s, c)] for images [n0, n0 + count), row stride taps().
template <typename T> void im2col_cpu(const T* x, T* col, const Conv2dGeom& g, int64_t n0, int64_t count);
// dx[n0 .. n0+count) = adjoint of im2col applied to dcol (written, not accumulated).
template <typename T> void col2im_cpu(const T* dcol, T* dx, const Conv2dGeom& g, int64_t n0, int64_t count);

}  // namespace rz
