// equalizeHist and CLAHE, OpenCV semantics (modules/imgproc/src/histogram.cpp
// equalizeHist, modules/imgproc/src/clahe.cpp CLAHE_CalcLut_Body /
// CLAHE_Interpolation_Body), single-threaded: the preprocessing runs one image
// per thread.
//
// Memory traffic: equalize_hist reads the image twice (histogram, LUT pass)
// and writes it once. clahe reads the image twice (tile histograms, then the
// interpolation pass) and writes it once; the padding for non-divisible sizes
// is never materialized (histogram rows/columns past the edge are mapped with
// BORDER_REFLECT_101), and the LUTs are tiles_x * tiles_y * 256 bytes.
// Interpolation weights are floats computed exactly as OpenCV does; this file
// is compiled without FMA contraction so (a*b + c) rounds like OpenCV's SSE
// baseline build and the output matches bit for bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "data/clahe.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "engine/error.h"

namespace rz::data {

namespace {

void check_gray(const Image& img, const char* what) {
  check_image(img, what);
  RZ_CHECK(img.channels == 1, what, ": expects a 1-channel (gray) image, got ", img.channels,
           " channels");
}

// cv::borderInterpolate for BORDER_REFLECT_101 (dcb|abcd|cba), including
// its repeated reflection when the border is wider than the image.
int64_t reflect101(int64_t p, int64_t len) {
  if (len == 1) return 0;
  while (p < 0 || p >= len) p = p < 0 ? -p : 2 * (len - 1) - p;
  return p;
}

}  // namespace

Image equalize_hist(const Image& gray) {
  check_gray(gray, "equalize_hist");
  std::array<int64_t, 256> hist{};
  const uint8_t* s = gray.pixels.data();
  const int64_t n = gray.numel();
  for (int64_t i = 0; i < n; ++i) ++hist[s[i]];

  int first = 0;
  while (hist[first] == 0) ++first;
  Image out(gray.height, gray.width, 1);
  if (hist[first] == n) {  // constant image: OpenCV sets every pixel to that value
    std::fill(out.pixels.begin(), out.pixels.end(), static_cast<uint8_t>(first));
    return out;
  }
  std::array<uint8_t, 256> lut{};
  const float scale = 255.0f / static_cast<float>(n - hist[first]);
  int64_t sum = 0;
  for (int v = first + 1; v < 256; ++v) {
    sum += hist[v];
    lut[v] = detail::saturate_u8(static_cast<float>(sum) * scale);
  }
  uint8_t* d = out.pixels.data();
  for (int64_t i = 0; i < n; ++i) d[i] = lut[s[i]];
  return out;
}

Image clahe(const Image& gray, double clip_limit, int tiles_x, int tiles_y) {
  check_gray(gray, "clahe");
  RZ_CHECK(tiles_x >= 1 && tiles_y >= 1, "clahe: tile grid must be at least 1x1, got ", tiles_x,
           "x", tiles_y);
  const int64_t H = gray.height, W = gray.width;
  const int64_t TX = tiles_x, TY = tiles_y;
  // Padded size and tile size, as cv::CLAHE pads with copyMakeBorder.
  const bool divisible = W % TX == 0 && H % TY == 0;
  const int64_t tile_w = (divisible ? W : W + TX - W % TX) / TX;
  const int64_t tile_h = (divisible ? H : H + TY - H % TY) / TY;
  const int64_t tile_area = tile_w * tile_h;
  RZ_CHECK(tile_area < (int64_t{1} << 31) / 2, "clahe: tiles too large (", tile_w, "x", tile_h,
           ")");
  const float lut_scale = 255.0f / static_cast<float>(tile_area);
  int64_t clip = 0;
  if (clip_limit > 0.0)
    clip = std::max<int64_t>(
        static_cast<int64_t>(clip_limit * static_cast<double>(tile_area) / 256), 1);

  // ---- per-tile LUTs: lut[(ty * TX + tx) * 256 + v] ----
  std::vector<uint8_t> lut(static_cast<size_t>(TX * TY * 256));
  std::vector<int32_t> hist(static_cast<size_t>(TX * 256));
  for (int64_t ty = 0; ty < TY; ++ty) {
    std::fill(hist.begin(), hist.end(), 0);
    for (int64_t y = ty * tile_h; y < (ty + 1) * tile_h; ++y) {
      const uint8_t* row = gray.row(y < H ? y : reflect101(y, H));
      for (int64_t tx = 0; tx < TX; ++tx) {
        int32_t* h = hist.data() + tx * 256;
        const int64_t x0 = tx * tile_w, x1 = x0 + tile_w;
        const int64_t x_in = std::min(x1, W);
        for (int64_t x = x0; x < x_in; ++x) ++h[row[x]];
        for (int64_t x = std::max(x0, W); x < x1; ++x) ++h[row[reflect101(x, W)]];
      }
    }
    for (int64_t tx = 0; tx < TX; ++tx) {
      int32_t* h = hist.data() + tx * 256;
      if (clip > 0) {
        const int32_t lim = static_cast<int32_t>(clip);
        int32_t clipped = 0;
        for (int i = 0; i < 256; ++i) {
          if (h[i] > lim) {
            clipped += h[i] - lim;
            h[i] = lim;
          }
        }
        const int32_t batch = clipped / 256;
        int32_t residual = clipped - batch * 256;
        for (int i = 0; i < 256; ++i) h[i] += batch;
        if (residual != 0) {
          const int32_t step = std::max<int32_t>(256 / residual, 1);
          for (int32_t i = 0; i < 256 && residual > 0; i += step, --residual) ++h[i];
        }
      }
      uint8_t* l = lut.data() + (ty * TX + tx) * 256;
      int32_t sum = 0;
      for (int i = 0; i < 256; ++i) {
        sum += h[i];
        l[i] = detail::saturate_u8(static_cast<float>(sum) * lut_scale);
      }
    }
  }

  // ---- bilinear blend between the 4 nearest tile LUTs ----
  // Tile centres sit at (t + 0.5) * tile size; coordinates left of the first
  // or right of the last centre clamp to the edge tile (weights unchanged).
  std::vector<int32_t> ind1(static_cast<size_t>(W)), ind2(static_cast<size_t>(W));
  std::vector<float> xa(static_cast<size_t>(W)), xa1(static_cast<size_t>(W));
  const float inv_tw = 1.0f / static_cast<float>(tile_w);
  for (int64_t x = 0; x < W; ++x) {
    const float txf = static_cast<float>(x) * inv_tw - 0.5f;
    int64_t tx1 = static_cast<int64_t>(std::floor(txf));
    int64_t tx2 = tx1 + 1;
    xa[x] = txf - static_cast<float>(tx1);
    xa1[x] = 1.0f - xa[x];
    tx1 = std::max<int64_t>(tx1, 0);
    tx2 = std::min<int64_t>(tx2, TX - 1);
    ind1[x] = static_cast<int32_t>(tx1 * 256);
    ind2[x] = static_cast<int32_t>(tx2 * 256);
  }
  Image out(H, W, 1);
  const float inv_th = 1.0f / static_cast<float>(tile_h);
  for (int64_t y = 0; y < H; ++y) {
    const float tyf = static_cast<float>(y) * inv_th - 0.5f;
    int64_t ty1 = static_cast<int64_t>(std::floor(tyf));
    int64_t ty2 = ty1 + 1;
    const float ya = tyf - static_cast<float>(ty1), ya1 = 1.0f - ya;
    ty1 = std::max<int64_t>(ty1, 0);
    ty2 = std::min<int64_t>(ty2, TY - 1);
    const uint8_t* lut1 = lut.data() + ty1 * TX * 256;
    const uint8_t* lut2 = lut.data() + ty2 * TX * 256;
    const uint8_t* s = gray.row(y);
    uint8_t* d = out.row(y);
    for (int64_t x = 0; x < W; ++x) {
      const int v = s[x];
      const int i1 = ind1[x] + v, i2 = ind2[x] + v;
      const float res = (lut1[i1] * xa1[x] + lut1[i2] * xa[x]) * ya1 +
                        (lut2[i1] * xa1[x] + lut2[i2] * xa[x]) * ya;
      d[x] = detail::saturate_u8(res);
    }
  }
  return out;
}

}  // namespace rz::data
