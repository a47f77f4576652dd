// CPU reference twins of 2-D pooling on NHWC tensors (channels innermost):
// x, dx: [N, H, W, C]; y, dy, argmax: [N, OH, OW, C]; all contiguous.
// Backward kernels OVERWRITE dx (every element is written; nothing is added
// to what was there). The caller validates shapes: k >= 1, s >= 1,
// 0 <= p <= k/2 (PyTorch's rule, which guarantees every window holds at least
// one input element) and OH, OW >= 1.
#pragma once

#include <cstdint>

namespace rz {

struct Pool2dGeom {
  int64_t N, H, W, C;      // input
  int64_t kh, kw, sh, sw;  // window and stride
  int64_t ph, pw;          // symmetric zero/-inf padding
  int64_t OH, OW;          // output
};

// PyTorch's output-size rule: out = floor_or_ceil((in + 2p - k) / s) + 1; with
// ceil_mode the last window must start inside the input or the left padding,
// so if (out - 1) * s >= in + p the last one is dropped.
int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode);

// Fills in OH and OW with pool_out_size.
Pool2dGeom make_pool2d_geom(int64_t N, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool ceil_mode);

// Max pool. Padding acts as -infinity (never selected). Writes y and
// argmax[n,oh,ow,c] = h*W + w of the chosen input: the first maximum in
// row-major window order on ties; a NaN in the window is propagated (the last
// NaN wins), as in PyTorch.
template <class T>
void max_pool2d_fwd_cpu(const T* x, T* y, int32_t* argmax, const Pool2dGeom& g);

// Writes dx: zeros, then dx[n, argmax, c] += dy[n, oh, ow, c] for each output
// (overlapping windows may route several outputs to one input).
template <class T>
void max_pool2d_bwd_cpu(const T* dy, const int32_t* argmax, T* dx, const Pool2dGeom& g);

// Average pool with PyTorch's avg_pool2d windows, ceil-mode edges included:
//   hstart = oh*sh - ph; hend = min(hstart + kh, H + ph); pool_h = hend - hstart;
//   then clip hstart >= 0, hend <= H (same for w);
//   divisor = count_include_pad ? pool_h * pool_w : (hend - hstart) * (wend - wstart).
// Sums are accumulated in double.
template <class T>
void avg_pool2d_fwd_cpu(const T* x, T* y, const Pool2dGeom& g, bool count_include_pad);

// Writes dx[n,h,w,c] = sum over the windows containing (h, w) of dy / divisor
// (a gather, accumulated in double).
template <class T>
void avg_pool2d_bwd_cpu(const T* dy, T* dx, const Pool2dGeom& g, bool count_include_pad);

// y[n,c] = mean over hw of x[n,hw,c]; x viewed as [N, HW, C].
template <class T>
void global_avg_pool_fwd_cpu(const T* x, T* y, int64_t N, int64_t HW, int64_t C);

// Writes dx[n,hw,c] = dy[n,c] / HW.
template <class T>
void global_avg_pool_bwd_cpu(const T* dy, T* dx, int64_t N, int64_t HW, int64_t C);

}  // namespace rz
