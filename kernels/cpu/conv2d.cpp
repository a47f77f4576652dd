// Memory traffic: the GEMM dominates (2*M*K*RSC flops). The forward pass of a
// convolution with at least kImplicitMinChannels input channels is an implicit
// GEMM: each im2col row (R*S/(sh*sw) times the input) is written by the GEMM
// straight into its L2-resident packing buffer, so the expanded input never goes
// to memory. With fewer channels, and in the backward passes, the im2col matrix is
// materialized: to bound that workspace, images are processed in groups whose
// im2col matrix stays under kColBudgetBytes; the weight gradient accumulates over
// groups with beta = 1 (fixed group order: deterministic). col2im is written as a
// gather over input pixels (each dx element sums the taps that read it), so it
// parallelizes without atomics.
#include "kernels/cpu/conv2d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/scratch.h"

namespace rz {

namespace {
constexpr int64_t kColBudgetBytes = 64ll << 20;
// Input channels from which the forward pass runs as an implicit GEMM (see the top).
constexpr int64_t kImplicitMinChannels = 16;
struct Im2colScratch {};

// Calls body(col, n0, count, m) for consecutive image groups, with `col` a
// workspace of m = count*OH*OW rows of taps() elements.
template <typename T, typename Body> void for_each_image_group(const Conv2dGeom& g, Body body) {
  const int64_t per_image = g.OH * g.OW * g.taps() * static_cast<int64_t>(sizeof(T));
  const int64_t group = std::clamp<int64_t>(kColBudgetBytes / std::max<int64_t>(per_image, 1), 1, g.N);
  // Uninitialized and reused across calls: every body writes the whole of it
  // (im2col, or the GEMM with beta = 0) before reading it.
  T* col = thread_scratch<T, Im2colScratch>().get(static_cast<size_t>(group * g.OH * g.OW * g.taps()));
  for (int64_t n0 = 0; n0 < g.N; n0 += group) {
    const int64_t count = std::min(group, g.N - n0);
    body(col, n0, count, count * g.OH * g.OW);
  }
}
}  // namespace

Conv2dGeom make_conv2d_geom(int64_t N, int64_t H, int64_t W, int64_t C, int64_t K, int64_t R,
                            int64_t S, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  Conv2dGeom g{N, H, W, C, K, R, S, sh, sw, ph, pw, 0, 0};
  g.OH = (H + 2 * ph - R) / sh + 1;
  g.OW = (W + 2 * pw - S) / sw + 1;
  return g;
}

template <typename T>
void im2col_cpu(const T* x, T* col, const Conv2dGeom& g, int64_t n0, int64_t count) {
  const int64_t taps = g.taps();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const T* xn = x + (n0 + n) * g.H * g.W * g.C;
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        T* row = col + ((n * g.OH + oh) * g.OW + ow) * taps;
        for (int64_t r = 0; r < g.R; ++r) {
          const int64_t ih = oh * g.sh - g.ph + r;
          for (int64_t s = 0; s < g.S; ++s) {
            const int64_t iw = ow * g.sw - g.pw + s;
            T* dst = row + (r * g.S + s) * g.C;
            if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
              std::fill(dst, dst + g.C, T(0));
            } else {
              const T* src = xn + (ih * g.W + iw) * g.C;
              std::copy(src, src + g.C, dst);
            }
          }
        }
      }
    }
  }
}

namespace {
struct Im2colRows {
  const void* x;
  const Conv2dGeom* g;
};

// Row `row` of the im2col matrix, elements [k0, k0 + kc): for each tap (r, s) the
// input pixel's C channels (or zeros in the padding), cut to the requested range.
// Walks the taps incrementally (one division per call); short runs (few channels)
// are copied inline rather than through memcpy calls.
template <typename T>
void im2col_row(const void* ctx, int64_t row, int64_t k0, int64_t kc, T* __restrict dst) {
  const auto& src = *static_cast<const Im2colRows*>(ctx);
  const Conv2dGeom& g = *src.g;
  const int64_t n = row / (g.OH * g.OW), ohw = row % (g.OH * g.OW);
  const int64_t ih0 = (ohw / g.OW) * g.sh - g.ph, iw0 = (ohw % g.OW) * g.sw - g.pw;
  const T* xn = static_cast<const T*>(src.x) + n * g.H * g.W * g.C;
  int64_t tap = k0 / g.C, c = k0 % g.C;
  int64_t r = tap / g.S, s = tap % g.S;
  for (int64_t left = kc; left > 0;) {
    const int64_t len = std::min(g.C - c, left);
    const int64_t ih = ih0 + r, iw = iw0 + s;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
      for (int64_t j = 0; j < len; ++j) dst[j] = T(0);
    } else {
      const T* __restrict p = xn + (ih * g.W + iw) * g.C + c;
      if (len >= 32) {
        std::memcpy(dst, p, static_cast<size_t>(len) * sizeof(T));
      } else {
        for (int64_t j = 0; j < len; ++j) dst[j] = p[j];
      }
    }
    dst += len;
    left -= len;
    c = 0;
    if (++s == g.S) s = 0, ++r;
  }
}
}  // namespace

template <typename T>
void col2im_cpu(const T* dcol, T* dx, const Conv2dGeom& g, int64_t n0, int64_t count) {
  const int64_t taps = g.taps();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t ih = 0; ih < g.H; ++ih) {
      T* dxn = dx + (n0 + n) * g.H * g.W * g.C;
      for (int64_t iw = 0; iw < g.W; ++iw) {
        T* dst = dxn + (ih * g.W + iw) * g.C;
        std::fill(dst, dst + g.C, T(0));
        // Taps (r, s) with ih = oh*sh - ph + r for an integer output row oh in range.
        for (int64_t r = 0; r < g.R; ++r) {
          const int64_t th = ih + g.ph - r;
          if (th < 0 || th % g.sh != 0 || th / g.sh >= g.OH) continue;
          const int64_t oh = th / g.sh;
          for (int64_t s = 0; s < g.S; ++s) {
            const int64_t tw = iw + g.pw - s;
            if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.OW) continue;
            const int64_t ow = tw / g.sw;
            const T* src = dcol + ((n * g.OH + oh) * g.OW + ow) * taps + (r * g.S + s) * g.C;
            for (int64_t c = 0; c < g.C; ++c) dst[c] += src[c];
          }
        }
      }
    }
  }
}

template <typename T>
void conv2d_fwd_cpu(const T* x, const T* w, T* y, const Conv2dGeom& g, const GemmEpilogue<T>* epilogue) {
  const int64_t taps = g.taps();
  if (g.is_pointwise()) {
    gemm_cpu<T>(false, true, g.rows(), g.K, taps, T(1), x, taps, w, taps, T(0), y, g.K, epilogue);
    return;
  }
  if (g.C >= kImplicitMinChannels) {
    // Implicit GEMM: the GEMM writes each im2col row straight into its packing buffer.
    const Im2colRows rows{x, &g};
    gemm_cpu_rows<T>(GemmRowSource<T>{&im2col_row<T>, &rows}, true, g.rows(), g.K, taps, T(1), w, taps,
                     T(0), y, g.K, epilogue);
    return;
  }
  // Few channels: runs of C elements are too short for the per-row fill to pay; the
  // explicit im2col (parallel over pixels) then the GEMM.
  for_each_image_group<T>(g, [&](T* col, int64_t n0, int64_t count, int64_t m) {
    im2col_cpu(x, col, g, n0, count);
    gemm_cpu<T>(false, true, m, g.K, taps, T(1), col, taps, w, taps, T(0), y + n0 * g.OH * g.OW * g.K, g.K,
                epilogue);
  });
}

template <typename T>
void conv2d_bwd_data_cpu(const T* dy, const T* w, T* dx, const Conv2dGeom& g) {
  const int64_t taps = g.taps();
  if (g.is_pointwise()) {
    gemm_cpu<T>(false, false, g.rows(), taps, g.K, T(1), dy, g.K, w, taps, T(0), dx, taps);
    return;
  }
  for_each_image_group<T>(g, [&](T* dcol, int64_t n0, int64_t count, int64_t m) {
    gemm_cpu<T>(false, false, m, taps, g.K, T(1), dy + n0 * g.OH * g.OW * g.K, g.K, w, taps, T(0),
                dcol, taps);
    col2im_cpu(dcol, dx, g, n0, count);
  });
}

template <typename T>
void conv2d_bwd_weight_cpu(const T* x, const T* dy, T* dw, const Conv2dGeom& g) {
  const int64_t taps = g.taps();
  if (g.is_pointwise()) {
    gemm_cpu<T>(true, false, g.K, taps, g.rows(), T(1), dy, g.K, x, taps, T(0), dw, taps);
    return;
  }
  for_each_image_group<T>(g, [&](T* col, int64_t n0, int64_t count, int64_t m) {
    im2col_cpu(x, col, g, n0, count);
    gemm_cpu<T>(true, false, g.K, taps, m, T(1), dy + n0 * g.OH * g.OW * g.K, g.K, col, taps,
                n0 == 0 ? T(0) : T(1), dw, taps);
  });
}

#define RZ_INSTANTIATE_CONV(T)                                                          \
  template void conv2d_fwd_cpu<T>(const T*, const T*, T*, const Conv2dGeom&, const GemmEpilogue<T>*);           \
  template void conv2d_bwd_data_cpu<T>(const T*, const T*, T*, const Conv2dGeom&);      \
  template void conv2d_bwd_weight_cpu<T>(const T*, const T*, T*, const Conv2dGeom&);    \
  template void im2col_cpu<T>(const T*, T*, const Conv2dGeom&, int64_t, int64_t);       \
  template void col2im_cpu<T>(const T*, T*, const Conv2dGeom&, int64_t, int64_t);
RZ_INSTANTIATE_CONV(float)
RZ_INSTANTIATE_CONV(double)

}  // namespace rz
