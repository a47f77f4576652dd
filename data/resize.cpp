// cv2.resize INTER_LINEAR and INTER_AREA, following OpenCV's
// modules/imgproc/src/resize.cpp (resizeGeneric_ with HResizeLinear /
// VResizeLinear, resizeAreaFast_, resizeArea_ with computeResizeAreaTab).
//
// Structure: separable. Each output row needs one or two source rows
// resampled horizontally into a row buffer (int32 fixed point for uint8,
// float for float), cached so consecutive output rows reuse them, then one
// vertical pass writes the output row. Coefficient tables are computed once
// per call (O(out_w + out_h)); nothing is allocated per pixel or per row.
//
// Memory traffic: linear reads each needed source row once per output row
// pair (shrinking by s reads ~2/s of the source rows), area reads every source
// row once (rows straddling two output rows are resampled once and reused),
// and the output is written once. Scratch: two rows of out_w * channels
// accumulators (int32 or float) plus the coefficient tables.
//
// Exactness: uint8 INTER_LINEAR emulates OpenCV's SIMD vertical pass (the
// horizontal sums are shifted right by 4, multiplied by the 11-bit weights
// keeping the high 16 bits, then rounded by >> 2) rather than its scalar
// formula ((a*b0 + b*b1 + 2^21) >> 22); INTER_AREA reproduces the float weight
// tables and summation order. With both, uint8 outputs equal OpenCV 5.0's bit
// for bit on the fixtures and on ~2000 random shapes/sizes/channel counts
// checked while writing this. The file is compiled without FMA contraction
// so float expressions round like OpenCV's SSE baseline build.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "data/resize.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/error.h"

namespace rz::data {

namespace {

constexpr int kCoefBits = 11;  // OpenCV's INTER_RESIZE_COEF_BITS
constexpr int kCoefOne = 1 << kCoefBits;

struct Scale {
  double inv_x = 0, inv_y = 0;  // out / in
  double x = 0, y = 0;          // in / out
  int ix = 0, iy = 0;           // nearest integers of x, y
  bool integer = false;         // OpenCV's is_area_fast
};

Scale compute_scale(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
  Scale s;
  s.inv_x = static_cast<double>(out_w) / static_cast<double>(in_w);
  s.inv_y = static_cast<double>(out_h) / static_cast<double>(in_h);
  s.x = 1.0 / s.inv_x;
  s.y = 1.0 / s.inv_y;
  s.ix = static_cast<int>(std::nearbyint(s.x));
  s.iy = static_cast<int>(std::nearbyint(s.y));
  s.integer = std::abs(s.x - s.ix) < DBL_EPSILON && std::abs(s.y - s.iy) < DBL_EPSILON;
  return s;
}

int64_t clamp_index(int64_t i, int64_t n) {
  return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

// Calls f(std::integral_constant<int, CN>) with CN = 1 or 3 when cn is one of
// those (so inner channel loops unroll), CN = 0 (runtime cn) otherwise.
template <typename F>
decltype(auto) with_channels(int64_t cn, F&& f) {
  if (cn == 1) return f(std::integral_constant<int, 1>{});
  if (cn == 3) return f(std::integral_constant<int, 3>{});
  return f(std::integral_constant<int, 0>{});
}

template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, uint8_t>, int32_t, float>;  // row buffers
template <typename T>
using Coef = std::conditional_t<std::is_same_v<T, uint8_t>, int16_t, float>;  // weights

// ---------------------------------------------------------------- linear ----

// Two-tap weights along one axis. area_mode selects the INTER_AREA enlarging
// variant. For the horizontal axis (clamp = true) taps left of the first or
// right of the last pixel are folded onto the edge pixel with weight 1, as
// OpenCV does; vertically OpenCV keeps the weights and clamps the row indices.
template <typename C>
void linear_axis(int64_t in, int64_t out, double scale, double inv_scale, bool area_mode,
                 bool clamp, std::vector<int64_t>& idx, std::vector<C>& w0, std::vector<C>& w1) {
  idx.resize(out);
  w0.resize(out);
  w1.resize(out);
  for (int64_t d = 0; d < out; ++d) {
    int64_t s;
    float f;
    if (!area_mode) {
      f = static_cast<float>((static_cast<double>(d) + 0.5) * scale - 0.5);
      s = static_cast<int64_t>(std::floor(f));
      f -= static_cast<float>(s);
    } else {
      s = static_cast<int64_t>(std::floor(static_cast<double>(d) * scale));
      f = static_cast<float>(static_cast<double>(d + 1) - static_cast<double>(s + 1) * inv_scale);
      f = f <= 0 ? 0.0f : f - std::floor(f);
    }
    if (clamp) {
      if (s < 0) f = 0, s = 0;
      if (s >= in - 1) f = 0, s = in - 1;
    }
    idx[d] = s;
    if constexpr (std::is_same_v<C, int16_t>) {
      w0[d] = static_cast<int16_t>(std::nearbyint((1.0f - f) * kCoefOne));
      w1[d] = static_cast<int16_t>(std::nearbyint(f * kCoefOne));
    } else {
      w0[d] = 1.0f - f;
      w1[d] = f;
    }
  }
}

// One source row resampled horizontally: D[dx*cn + c] = S[x0]*a0 + S[x1]*a1.
// x0, x1 are element offsets (pixel * cn); x1 is clamped to the last pixel,
// where its weight is 0.
template <int CN, typename T>
void hresize_linear(const T* src, int64_t cn_rt, const int64_t* x0, const int64_t* x1,
                    const Coef<T>* a0, const Coef<T>* a1, int64_t out_w, Acc<T>* dst) {
  const int64_t cn = CN > 0 ? CN : cn_rt;
  for (int64_t dx = 0; dx < out_w; ++dx, dst += cn) {
    const T* p0 = src + x0[dx];
    const T* p1 = src + x1[dx];
    const Acc<T> w0 = a0[dx], w1 = a1[dx];
    for (int64_t c = 0; c < cn; ++c) dst[c] = p0[c] * w0 + p1[c] * w1;
  }
}

// uint8 vertical pass as OpenCV's VResizeLinearVec_32s8u computes it.
void vresize_linear(const int32_t* s0, const int32_t* s1, int16_t b0, int16_t b1, int64_t n,
                    uint8_t* dst) {
  for (int64_t x = 0; x < n; ++x) {
    const int32_t t = (((s0[x] >> 4) * b0) >> 16) + (((s1[x] >> 4) * b1) >> 16);
    const int32_t v = (t + 2) >> 2;
    dst[x] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
  }
}

void vresize_linear(const float* s0, const float* s1, float b0, float b1, int64_t n, float* dst) {
  for (int64_t x = 0; x < n; ++x) dst[x] = s0[x] * b0 + s1[x] * b1;
}

// Holds horizontally resampled source rows; asking for the two rows of the
// next output row reuses what the previous one computed.
template <typename T>
class RowCache {
 public:
  explicit RowCache(int64_t n) : buf_{std::vector<Acc<T>>(n), std::vector<Acc<T>>(n)} {}
  template <typename Fill>
  const Acc<T>* get(int64_t row, int64_t avoid_row, Fill&& fill) {
    for (int i = 0; i < 2; ++i)
      if (row_[i] == row) return buf_[i].data();
    const int slot = row_[0] == avoid_row ? 1 : 0;  // keep the row the caller also needs
    row_[slot] = row;
    fill(row, buf_[slot].data());
    return buf_[slot].data();
  }

 private:
  std::vector<Acc<T>> buf_[2];
  int64_t row_[2] = {-1, -1};
};

template <typename T>
ImageT<T> resize_linear_impl(const ImageT<T>& src, int64_t out_h, int64_t out_w, const Scale& s,
                             bool area_mode) {
  const int64_t cn = src.channels;
  std::vector<int64_t> xofs, yofs;
  std::vector<Coef<T>> a0, a1, b0, b1;
  linear_axis(src.width, out_w, s.x, s.inv_x, area_mode, true, xofs, a0, a1);
  linear_axis(src.height, out_h, s.y, s.inv_y, area_mode, false, yofs, b0, b1);

  std::vector<int64_t> x0(out_w), x1(out_w);  // element offsets of the two taps
  for (int64_t dx = 0; dx < out_w; ++dx) {
    x0[dx] = xofs[dx] * cn;
    x1[dx] = std::min(xofs[dx] + 1, src.width - 1) * cn;
  }

  ImageT<T> dst(out_h, out_w, cn);
  const int64_t n = out_w * cn;
  RowCache<T> cache(n);
  auto fill = [&](int64_t row, Acc<T>* buf) {
    with_channels(cn, [&](auto CN) {
      hresize_linear<CN()>(src.row(row), cn, x0.data(), x1.data(), a0.data(), a1.data(), out_w,
                           buf);
    });
  };
  for (int64_t dy = 0; dy < out_h; ++dy) {
    const int64_t r0 = clamp_index(yofs[dy], src.height);
    const int64_t r1 = clamp_index(yofs[dy] + 1, src.height);
    const Acc<T>* s0 = cache.get(r0, r1, fill);
    const Acc<T>* s1 = cache.get(r1, r0, fill);
    vresize_linear(s0, s1, b0[dy], b1[dy], n, dst.row(dy));
  }
  return dst;
}

// ------------------------------------------------------------------ area ----

// Integer shrink factors kx, ky (src = k * dst exactly): block averages.
// uint8 sums are integers, so they are accumulated row by row (one pass over
// each source row); float keeps OpenCV's per-block summation order.
template <int CN, typename T>
void area_integer_rows(const ImageT<T>& src, ImageT<T>& dst, int kx, int ky) {
  const int64_t cn = CN > 0 ? CN : src.channels;
  const int64_t out_w = dst.width, n = out_w * cn, step = src.row_elems();
  const float scale = 1.0f / static_cast<float>(kx * ky);
  std::vector<int32_t> acc(std::is_same_v<T, uint8_t> ? n : 0);
  for (int64_t dy = 0; dy < dst.height; ++dy) {
    const T* s = src.row(dy * ky);
    T* d = dst.row(dy);
    if (kx == 2 && ky == 2 && cn != 2) {  // OpenCV's dedicated 2x2 path (not for 2 channels)
      const T* t = s + step;
      for (int64_t dx = 0; dx < out_w; ++dx) {
        for (int64_t c = 0; c < cn; ++c) {
          const int64_t i = 2 * dx * cn + c;
          if constexpr (std::is_same_v<T, uint8_t>)  // OpenCV's 2x2 path: round half up
            d[dx * cn + c] = static_cast<uint8_t>((s[i] + s[i + cn] + t[i] + t[i + cn] + 2) >> 2);
          else
            d[dx * cn + c] = ((s[i] + s[i + cn]) + (t[i] + t[i + cn])) * 0.25f;
        }
      }
    } else if constexpr (std::is_same_v<T, uint8_t>) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t yy = 0; yy < ky; ++yy, s += step) {
        const uint8_t* p = s;
        int32_t* a = acc.data();
        for (int64_t dx = 0; dx < out_w; ++dx, a += cn)
          for (int64_t xx = 0; xx < kx; ++xx, p += cn)
            for (int64_t c = 0; c < cn; ++c) a[c] += p[c];
      }
      for (int64_t j = 0; j < n; ++j)
        d[j] = detail::saturate_u8(static_cast<float>(acc[j]) * scale);
    } else {
      const int64_t area = int64_t{kx} * ky;
      for (int64_t dx = 0; dx < out_w; ++dx) {
        for (int64_t c = 0; c < cn; ++c) {
          // OpenCV visits the block row-major and adds 4 terms per step:
          // sum += ((p0 + p1) + p2) + p3, then the remainder one at a time.
          const T* base = s + dx * kx * cn + c;
          auto at = [&](int64_t k) { return base[(k / kx) * step + (k % kx) * cn]; };
          float sum = 0;
          int64_t k = 0;
          for (; k + 4 <= area; k += 4) sum += at(k) + at(k + 1) + at(k + 2) + at(k + 3);
          for (; k < area; ++k) sum += at(k);
          d[dx * cn + c] = sum * scale;
        }
      }
    }
  }
}

template <typename T>
ImageT<T> resize_area_integer(const ImageT<T>& src, int64_t out_h, int64_t out_w, int kx, int ky) {
  ImageT<T> dst(out_h, out_w, src.channels);
  with_channels(src.channels, [&](auto CN) { area_integer_rows<CN()>(src, dst, kx, ky); });
  return dst;
}

struct AreaTap {
  int64_t src;  // source pixel
  int64_t dst;  // output pixel
  float alpha;  // fraction of the output footprint this source pixel covers
};

// OpenCV's computeResizeAreaTab: for each output pixel, the source pixels its
// footprint [d*scale, (d+1)*scale) touches, in increasing order.
std::vector<AreaTap> area_taps(int64_t in, int64_t out, double scale) {
  std::vector<AreaTap> tab;
  tab.reserve(static_cast<size_t>(in + 2 * out));
  for (int64_t d = 0; d < out; ++d) {
    const double f1 = static_cast<double>(d) * scale;
    const double f2 = f1 + scale;
    const double cell = std::min(scale, static_cast<double>(in) - f1);
    int64_t s1 = static_cast<int64_t>(std::ceil(f1));
    int64_t s2 = static_cast<int64_t>(std::floor(f2));
    s2 = std::min(s2, in - 1);
    s1 = std::min(s1, s2);
    if (static_cast<double>(s1) - f1 > 1e-3)
      tab.push_back({s1 - 1, d, static_cast<float>((static_cast<double>(s1) - f1) / cell)});
    for (int64_t s = s1; s < s2; ++s) tab.push_back({s, d, static_cast<float>(1.0 / cell)});
    if (f2 - static_cast<double>(s2) > 1e-3)
      tab.push_back(
          {s2, d,
           static_cast<float>(std::min(std::min(f2 - static_cast<double>(s2), 1.0), cell) / cell)});
  }
  return tab;
}

// Fractional shrink: weighted sums over the tap tables, in float.
template <typename T>
ImageT<T> resize_area_fractional(const ImageT<T>& src, int64_t out_h, int64_t out_w,
                                 const Scale& s) {
  const int64_t cn = src.channels;
  const std::vector<AreaTap> xtab = area_taps(src.width, out_w, s.x);
  const std::vector<AreaTap> ytab = area_taps(src.height, out_h, s.y);
  ImageT<T> dst(out_h, out_w, cn);
  const int64_t n = out_w * cn;
  std::vector<float> buf(n), sum(n, 0.0f);
  int64_t buf_row = -1;

  auto store = [&](int64_t dy) {
    T* d = dst.row(dy);
    if constexpr (std::is_same_v<T, uint8_t>)
      for (int64_t j = 0; j < n; ++j) d[j] = detail::saturate_u8(sum[j]);
    else
      std::memcpy(d, sum.data(), sizeof(float) * n);
  };
  int64_t prev_dy = ytab.front().dst;
  for (const AreaTap& yt : ytab) {
    if (yt.src != buf_row) {  // horizontal pass over source row yt.src
      const T* row = src.row(yt.src);
      std::fill(buf.begin(), buf.end(), 0.0f);
      with_channels(cn, [&](auto CN) {
        const int64_t ncn = CN() > 0 ? CN() : cn;
        for (const AreaTap& xt : xtab) {
          const T* p = row + xt.src * ncn;
          float* b = buf.data() + xt.dst * ncn;
          for (int64_t c = 0; c < ncn; ++c) b[c] += static_cast<float>(p[c]) * xt.alpha;
        }
      });
      buf_row = yt.src;
    }
    const float beta = yt.alpha;
    if (yt.dst != prev_dy) {
      store(prev_dy);
      for (int64_t j = 0; j < n; ++j) sum[j] = beta * buf[j];
      prev_dy = yt.dst;
    } else {
      for (int64_t j = 0; j < n; ++j) sum[j] += beta * buf[j];
    }
  }
  store(prev_dy);
  return dst;
}

template <typename T>
void check_resize_args(const ImageT<T>& src, int64_t out_h, int64_t out_w, const char* what) {
  check_image(src, what);
  RZ_CHECK(out_h >= 1 && out_w >= 1, what, ": output size must be positive, got ", out_h, "x",
           out_w);
  RZ_CHECK(out_h < (int64_t{1} << 30) && out_w < (int64_t{1} << 30) &&
               src.height < (int64_t{1} << 30) && src.width < (int64_t{1} << 30),
           what, ": size too large");
}

template <typename T>
ImageT<T> resize_area_t(const ImageT<T>& src, int64_t out_h, int64_t out_w) {
  check_resize_args(src, out_h, out_w, "resize_area");
  if (out_h == src.height && out_w == src.width) return src;
  const Scale s = compute_scale(src.height, src.width, out_h, out_w);
  if (s.x >= 1 && s.y >= 1) {
    if (s.integer && src.width == out_w * s.ix && src.height == out_h * s.iy)
      return resize_area_integer(src, out_h, out_w, s.ix, s.iy);
    return resize_area_fractional(src, out_h, out_w, s);
  }
  return resize_linear_impl(src, out_h, out_w, s, /*area_mode=*/true);
}

template <typename T>
ImageT<T> resize_bilinear_t(const ImageT<T>& src, int64_t out_h, int64_t out_w) {
  check_resize_args(src, out_h, out_w, "resize_bilinear");
  if (out_h == src.height && out_w == src.width) return src;
  const Scale s = compute_scale(src.height, src.width, out_h, out_w);
  if (s.integer && s.ix == 2 && s.iy == 2 && src.width == 2 * out_w && src.height == 2 * out_h)
    return resize_area_integer(src, out_h, out_w, 2, 2);
  return resize_linear_impl(src, out_h, out_w, s, /*area_mode=*/false);
}

}  // namespace

Image resize_area(const Image& src, int64_t out_h, int64_t out_w) {
  return resize_area_t(src, out_h, out_w);
}
ImageF resize_area(const ImageF& src, int64_t out_h, int64_t out_w) {
  return resize_area_t(src, out_h, out_w);
}
Image resize_bilinear(const Image& src, int64_t out_h, int64_t out_w) {
  return resize_bilinear_t(src, out_h, out_w);
}
ImageF resize_bilinear(const ImageF& src, int64_t out_h, int64_t out_w) {
  return resize_bilinear_t(src, out_h, out_w);
}

}  // namespace rz::data
