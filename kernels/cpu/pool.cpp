// 2-D pooling on NHWC. Channels are innermost, so every window position is a
// contiguous run of C values and all inner loops run over c.
// Traffic: max/avg forward read x about (kh/sh)*(kw/sw) times (overlapping
// windows; the rows stay in cache) and write y (+ int32 argmax for max);
// max backward writes dx once (zero-fill) plus one scatter per output;
// avg backward is a gather: each dx element is written exactly once.
// Every task owns a disjoint slice of the output, and each sum runs in a fixed
// order, so results do not depend on the thread count.
#include "kernels/cpu/pool.h"

#include "kernels/common/pool_math.h"
#include "kernels/cpu/thread_scratch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace rz {

namespace {

constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kChanBlock = 64;

using Window1d = PoolWindow1d;

Window1d window1d(int64_t o, int64_t k, int64_t s, int64_t p, int64_t in) {
  return pool_window1d(o, k, s, p, in);
}

double avg_divisor(const Window1d& wh, const Window1d& ww, bool count_include_pad) {
  return static_cast<double>(pool_window_count(wh, ww, count_include_pad));
}

}  // namespace

int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil_mode) {
  int64_t out = (in + 2 * p - k + (ceil_mode ? s - 1 : 0)) / s + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

Pool2dGeom make_pool2d_geom(int64_t N, int64_t H, int64_t W, int64_t C, int64_t kh, int64_t kw,
                            int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool ceil_mode) {
  return Pool2dGeom{N,
                    H,
                    W,
                    C,
                    kh,
                    kw,
                    sh,
                    sw,
                    ph,
                    pw,
                    pool_out_size(H, kh, sh, ph, ceil_mode),
                    pool_out_size(W, kw, sw, pw, ceil_mode)};
}

template <class T>
void max_pool2d_fwd_cpu(const T* x, T* y, int32_t* argmax, const Pool2dGeom& g) {
  const int64_t C = g.C;
  const int64_t rows = g.N * g.OH;
#pragma omp parallel for schedule(static) if (rows * g.OW * C >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = r / g.OH, oh = r % g.OH;
    const int64_t h0 = std::max<int64_t>(oh * g.sh - g.ph, 0);
    const int64_t h1 = std::min(oh * g.sh - g.ph + g.kh, g.H);
    const T* xn = x + n * g.H * g.W * C;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pw, 0);
      const int64_t w1 = std::min(ow * g.sw - g.pw + g.kw, g.W);
      T* yo = y + (r * g.OW + ow) * C;
      int32_t* ao = argmax + (r * g.OW + ow) * C;
      // Start from -inf pointing at the first valid input, so a window of
      // -inf values still reports a real position.
      const auto first = static_cast<int32_t>(h0 * g.W + w0);
      for (int64_t c = 0; c < C; ++c) {
        yo[c] = -std::numeric_limits<T>::infinity();
        ao[c] = first;
      }
      for (int64_t h = h0; h < h1; ++h) {
        for (int64_t w = w0; w < w1; ++w) {
          const T* xp = xn + (h * g.W + w) * C;
          const auto idx = static_cast<int32_t>(h * g.W + w);
          for (int64_t c = 0; c < C; ++c) {
            const T v = xp[c];
            if (v > yo[c] || std::isnan(v)) {
              yo[c] = v;
              ao[c] = idx;
            }
          }
        }
      }
    }
  }
}

template <class T>
void max_pool2d_bwd_cpu(const T* dy, const int32_t* argmax, T* dx, const Pool2dGeom& g) {
  const int64_t C = g.C, HW = g.H * g.W, OHW = g.OH * g.OW;
  const int64_t blocks = (C + kChanBlock - 1) / kChanBlock;
  // One task per (image, channel block): its dx slice is private to it.
#pragma omp parallel for collapse(2) schedule(static) if (g.N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kChanBlock;
      const int64_t nc = std::min(kChanBlock, C - c0);
      T* dxn = dx + n * HW * C + c0;
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < nc; ++c) dxn[i * C + c] = T(0);
      const T* dyn = dy + n * OHW * C + c0;
      const int32_t* an = argmax + n * OHW * C + c0;
      for (int64_t o = 0; o < OHW; ++o)
        for (int64_t c = 0; c < nc; ++c) dxn[an[o * C + c] * C + c] += dyn[o * C + c];
    }
  }
}

template <class T>
void avg_pool2d_fwd_cpu(const T* x, T* y, const Pool2dGeom& g, bool count_include_pad) {
  const int64_t C = g.C;
  const int64_t rows = g.N * g.OH;
  ThreadScratch<double> scratch(C);
#pragma omp parallel if (rows * g.OW * C >= kParallelMin)
  {
    double* const acc = scratch.mine();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / g.OH, oh = r % g.OH;
      const Window1d wh = window1d(oh, g.kh, g.sh, g.ph, g.H);
      const T* xn = x + n * g.H * g.W * C;
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const Window1d ww = window1d(ow, g.kw, g.sw, g.pw, g.W);
        std::fill(acc, acc + C, 0.0);
        for (int64_t h = wh.start; h < wh.end; ++h) {
          for (int64_t w = ww.start; w < ww.end; ++w) {
            const T* xp = xn + (h * g.W + w) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(xp[c]);
          }
        }
        const double div = avg_divisor(wh, ww, count_include_pad);
        T* yo = y + (r * g.OW + ow) * C;
        for (int64_t c = 0; c < C; ++c) yo[c] = static_cast<T>(acc[c] / div);
      }
    }
  }
}

template <class T>
void avg_pool2d_bwd_cpu(const T* dy, T* dx, const Pool2dGeom& g, bool count_include_pad) {
  const int64_t C = g.C;
  const int64_t rows = g.N * g.H;
  // Output o covers input i iff o*s - p <= i < o*s - p + k (the in + p cap on
  // the window end never excludes a real input), so
  //   o in [max(0, floor((i + p - k) / s) + 1), min(OH - 1, floor((i + p) / s))].
  const auto first_out = [](int64_t i, int64_t k, int64_t s, int64_t p) {
    const int64_t t = i + p - k;
    return t < 0 ? int64_t{0} : t / s + 1;
  };
  ThreadScratch<double> scratch(C);
#pragma omp parallel if (rows * g.W * C >= kParallelMin)
  {
    double* const acc = scratch.mine();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / g.H, h = r % g.H;
      const int64_t oh0 = first_out(h, g.kh, g.sh, g.ph);
      const int64_t oh1 = std::min(g.OH - 1, (h + g.ph) / g.sh);
      const T* dyn = dy + n * g.OH * g.OW * C;
      for (int64_t w = 0; w < g.W; ++w) {
        const int64_t ow0 = first_out(w, g.kw, g.sw, g.pw);
        const int64_t ow1 = std::min(g.OW - 1, (w + g.pw) / g.sw);
        std::fill(acc, acc + C, 0.0);
        for (int64_t oh = oh0; oh <= oh1; ++oh) {
          const Window1d wh = window1d(oh, g.kh, g.sh, g.ph, g.H);
          for (int64_t ow = ow0; ow <= ow1; ++ow) {
            const Window1d ww = window1d(ow, g.kw, g.sw, g.pw, g.W);
            const double inv = 1.0 / avg_divisor(wh, ww, count_include_pad);
            const T* dyp = dyn + (oh * g.OW + ow) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(dyp[c]) * inv;
          }
        }
        T* dxp = dx + (r * g.W + w) * C;
        for (int64_t c = 0; c < C; ++c) dxp[c] = static_cast<T>(acc[c]);
      }
    }
  }
}

template <class T>
void global_avg_pool_fwd_cpu(const T* x, T* y, int64_t N, int64_t HW, int64_t C) {
  const int64_t blocks = (C + kChanBlock - 1) / kChanBlock;
  const double inv = 1.0 / static_cast<double>(HW);
#pragma omp parallel for collapse(2) schedule(static) if (N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kChanBlock;
      const int64_t nc = std::min(kChanBlock, C - c0);
      double acc[kChanBlock] = {};
      for (int64_t hw = 0; hw < HW; ++hw) {
        const T* xr = x + (n * HW + hw) * C + c0;
#pragma omp simd
        for (int64_t c = 0; c < nc; ++c) acc[c] += static_cast<double>(xr[c]);
      }
      for (int64_t c = 0; c < nc; ++c) y[n * C + c0 + c] = static_cast<T>(acc[c] * inv);
    }
  }
}

template <class T>
void global_avg_pool_bwd_cpu(const T* dy, T* dx, int64_t N, int64_t HW, int64_t C) {
  const int64_t rows = N * HW;
  const double inv = 1.0 / static_cast<double>(HW);
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyn = dy + (r / HW) * C;
    T* dxr = dx + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dxr[c] = static_cast<T>(static_cast<double>(dyn[c]) * inv);
  }
}

#define RZ_INSTANTIATE(T)                                                               \
  template void max_pool2d_fwd_cpu<T>(const T*, T*, int32_t*, const Pool2dGeom&);       \
  template void max_pool2d_bwd_cpu<T>(const T*, const int32_t*, T*, const Pool2dGeom&); \
  template void avg_pool2d_fwd_cpu<T>(const T*, T*, const Pool2dGeom&, bool);           \
  template void avg_pool2d_bwd_cpu<T>(const T*, T*, const Pool2dGeom&, bool);           \
  template void global_avg_pool_fwd_cpu<T>(const T*, T*, int64_t, int64_t, int64_t);    \
  template void global_avg_pool_bwd_cpu<T>(const T*, T*, int64_t, int64_t, int64_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
