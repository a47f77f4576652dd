// Seeded augmentations: parameter sampling, the composed affine map, the
// optional area prefilter and the single bilinear warp. See data/augment.h
// for the semantics.
//
// Warp inner loop: coordinates are int64 fixed point with 32 fractional bits.
// Per output row the start coordinate is computed from the map in double
// (no drift between rows), per pixel it advances by a constant increment
// (u * step, so the error is at most out_size * 2^-33 pixels). The integer
// part is the top-left tap, the next 11 bits are the bilinear weights (OpenCV's
// INTER_RESIZE_COEF_BITS); the 2-D blend is done in int32
// (255 * 2^11 * 2^11 < 2^31) and rounded to nearest. A pixel whose four taps
// are inside the image reads them directly; the others (a thin ring along the
// image edges and the rotated-in border) go through the border-mode lookup.
// Nothing is allocated per pixel or per row.
//
// Memory traffic per image: the output is written once; each output pixel
// reads a 2x2 neighbourhood of the source (a cache-friendly walk along a
// nearly horizontal line for small angles). The prefilter path adds one copy
// of the region the output reads and one resize_area pass over it.
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <type_traits>

#include "data/resize.h"
#include "engine/error.h"

namespace rz::data {

namespace {

constexpr int kCoordFracBits = 32;
constexpr int kWeightBits = 11;
constexpr int32_t kWeightOne = 1 << kWeightBits;
constexpr int kBlendShift = 2 * kWeightBits;
constexpr int32_t kBlendRound = 1 << (kBlendShift - 1);

int64_t to_fixed(double v) {
  return std::llround(std::ldexp(v, kCoordFracBits));
}

bool is_probability(double p) {
  return p >= 0.0 && p <= 1.0;
}

bool is_range(const std::array<double, 2>& r) {
  return std::isfinite(r[0]) && std::isfinite(r[1]) && r[0] <= r[1];
}

// sin and cos of an angle in degrees, exact at multiples of 90 degrees so
// that quarter turns map pixel centres onto pixel centres.
void sincos_deg(double deg, double& s, double& c) {
  double r = std::fmod(deg, 360.0);
  if (r < 0) r += 360.0;
  if (r == 0.0) {
    s = 0.0, c = 1.0;
  } else if (r == 90.0) {
    s = 1.0, c = 0.0;
  } else if (r == 180.0) {
    s = 0.0, c = -1.0;
  } else if (r == 270.0) {
    s = -1.0, c = 0.0;
  } else {
    const double rad = deg * std::numbers::pi / 180.0;
    s = std::sin(rad);
    c = std::cos(rad);
  }
}

// Index of source row/column i under the border mode, or -1 for "the
// constant border value".
int64_t border_index(int64_t i, int64_t n, BorderMode mode) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case BorderMode::constant:
      return -1;
    case BorderMode::replicate:
      return i < 0 ? 0 : n - 1;
    case BorderMode::reflect101: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t r = i % period;
      if (r < 0) r += period;
      return r < n ? r : period - r;
    }
  }
  return -1;
}

// albumentations' _brightness_contrast_adjust_uint (brightness_by_max=True):
// a float32 LUT, clipped to [0, 255] and truncated by astype(uint8).
std::array<uint8_t, 256> brightness_contrast_lut(double contrast, double brightness) {
  const float alpha = static_cast<float>(1.0 + contrast);
  const float beta = static_cast<float>(brightness * 255.0);
  std::array<uint8_t, 256> lut{};
  for (int i = 0; i < 256; ++i) {
    float v = static_cast<float>(i);
    if (alpha != 1.0f) v *= alpha;
    if (beta != 0.0f) v += beta;
    v = std::clamp(v, 0.0f, 255.0f);
    lut[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  }
  return lut;
}

// Bilinear warp of src into out along m (output pixel -> source pixel).
// CN: channels when 1 or 3 (unrolled), 0 = runtime src.channels. kLut: map
// every source tap through lut (brightness/contrast) before blending.
template <int CN, bool kLut>
void warp_bilinear(const Image& src, Image& out, const AffineMap& m, BorderMode mode,
                   uint8_t border_value, const uint8_t* lut) {
  const int64_t cn = CN > 0 ? CN : src.channels;
  const int64_t src_w = src.width, src_h = src.height;
  const int64_t stride = src.row_elems();
  const uint8_t* base = src.pixels.data();
  const int64_t step_x = to_fixed(m.xx), step_y = to_fixed(m.yx);
  const auto tap = [lut](uint8_t v) -> int32_t {
    if constexpr (kLut) {
      return lut[v];
    } else {
      (void)lut;
      return v;
    }
  };
  constexpr int kFracToWeight = kCoordFracBits - kWeightBits;

  for (int64_t v = 0; v < out.height; ++v) {
    const double vd = static_cast<double>(v);
    const int64_t row_x = to_fixed(m.xy * vd + m.x0);
    const int64_t row_y = to_fixed(m.yy * vd + m.y0);
    uint8_t* o = out.row(v);
    for (int64_t u = 0; u < out.width; ++u, o += cn) {
      const int64_t fx = row_x + u * step_x;
      const int64_t fy = row_y + u * step_y;
      const int64_t x0 = fx >> kCoordFracBits;  // floor (arithmetic shift)
      const int64_t y0 = fy >> kCoordFracBits;
      const int32_t wx = static_cast<int32_t>((fx >> kFracToWeight) & (kWeightOne - 1));
      const int32_t wy = static_cast<int32_t>((fy >> kFracToWeight) & (kWeightOne - 1));
      const int32_t ix = kWeightOne - wx, iy = kWeightOne - wy;
      if (static_cast<uint64_t>(x0) < static_cast<uint64_t>(src_w - 1) &&
          static_cast<uint64_t>(y0) < static_cast<uint64_t>(src_h - 1)) {
        const uint8_t* p = base + y0 * stride + x0 * cn;
        for (int64_t c = 0; c < cn; ++c) {
          const int32_t top = tap(p[c]) * ix + tap(p[c + cn]) * wx;
          const int32_t bot = tap(p[c + stride]) * ix + tap(p[c + stride + cn]) * wx;
          o[c] = static_cast<uint8_t>((top * iy + bot * wy + kBlendRound) >> kBlendShift);
        }
      } else {
        int64_t xa = border_index(x0, src_w, mode), xb = border_index(x0 + 1, src_w, mode);
        int64_t ya = border_index(y0, src_h, mode), yb = border_index(y0 + 1, src_h, mode);
        if (mode == BorderMode::constant) {
          // The image covers [-0.5, n - 0.5]: a sample inside that extent
          // reads only image pixels (the edge pixel over the outer half
          // pixel, as cv2.resize does), so a crop-resize without rotation
          // never blends in the border value.
          constexpr int32_t kHalf = kWeightOne / 2;
          if (x0 == -1 && wx >= kHalf) xa = 0;
          if (x0 == src_w - 1 && wx <= kHalf) xb = src_w - 1;
          if (y0 == -1 && wy >= kHalf) ya = 0;
          if (y0 == src_h - 1 && wy <= kHalf) yb = src_h - 1;
        }
        const auto at = [&](int64_t y, int64_t x, int64_t c) -> int32_t {
          if (y < 0 || x < 0) return border_value;
          return tap(base[y * stride + x * cn + c]);
        };
        for (int64_t c = 0; c < cn; ++c) {
          const int32_t top = at(ya, xa, c) * ix + at(ya, xb, c) * wx;
          const int32_t bot = at(yb, xa, c) * ix + at(yb, xb, c) * wx;
          o[c] = static_cast<uint8_t>((top * iy + bot * wy + kBlendRound) >> kBlendShift);
        }
      }
    }
  }
}

template <bool kLut>
void warp_dispatch(const Image& src, Image& out, const AffineMap& m, BorderMode mode,
                   uint8_t border_value, const uint8_t* lut) {
  if (src.channels == 1) {
    warp_bilinear<1, kLut>(src, out, m, mode, border_value, lut);
  } else if (src.channels == 3) {
    warp_bilinear<3, kLut>(src, out, m, mode, border_value, lut);
  } else {
    warp_bilinear<0, kLut>(src, out, m, mode, border_value, lut);
  }
}

// When m shrinks a source axis by more than cfg.prefilter_above, reduces the
// part of src that the output reads (its bounding box plus a margin of at
// least two reduced pixels, clipped to the image) with resize_area to the
// output's scale, stores it in `reduced` and rewrites m to address it.
// Returns false (m untouched) when no prefilter is needed.
//
// Border modes stay meaningful: where the box is clipped, the reduced image's
// edge is the source's edge; elsewhere the margin keeps every bilinear tap
// inside the reduced image.
bool area_prefilter(const Image& src, AffineMap& m, const AugmentConfig& cfg, Image& reduced) {
  // Source pixels per output pixel along each source axis.
  const double fx = std::hypot(m.xx, m.xy);
  const double fy = std::hypot(m.yx, m.yy);
  if (std::max(fx, fy) <= cfg.prefilter_above) return false;

  const double s = static_cast<double>(cfg.out_size);
  double min_x = INFINITY, max_x = -INFINITY, min_y = INFINITY, max_y = -INFINITY;
  for (const double u : {-0.5, s - 0.5}) {
    for (const double v : {-0.5, s - 0.5}) {
      const double x = m.xx * u + m.xy * v + m.x0;
      const double y = m.yx * u + m.yy * v + m.y0;
      min_x = std::min(min_x, x), max_x = std::max(max_x, x);
      min_y = std::min(min_y, y), max_y = std::max(max_y, y);
    }
  }
  const double margin = 2.0 * std::max(fx, fy) + 2.0;
  const double w = static_cast<double>(src.width), h = static_cast<double>(src.height);
  const auto lo = [&](double v, double n) {
    return static_cast<int64_t>(std::clamp(std::floor(v - margin), 0.0, n));
  };
  const auto hi = [&](double v, double n) {
    return static_cast<int64_t>(std::clamp(std::ceil(v + margin) + 1.0, 0.0, n));
  };
  const int64_t x_lo = lo(min_x, w), x_hi = hi(max_x, w);
  const int64_t y_lo = lo(min_y, h), y_hi = hi(max_y, h);
  const int64_t rw = x_hi - x_lo, rh = y_hi - y_lo;
  if (rw < 1 || rh < 1) return false;  // the output reads only border pixels
  const auto reduced_size = [](int64_t n, double f) {
    return f > 1.0 ? std::max<int64_t>(1, std::llround(static_cast<double>(n) / f)) : n;
  };
  const int64_t iw = reduced_size(rw, fx), ih = reduced_size(rh, fy);
  if (iw == rw && ih == rh) return false;

  Image region(rh, rw, src.channels);
  const size_t row_bytes = static_cast<size_t>(rw * src.channels);
  for (int64_t y = 0; y < rh; ++y) {
    std::memcpy(region.row(y), src.row(y + y_lo) + x_lo * src.channels, row_bytes);
  }
  reduced = resize_area(region, ih, iw);

  // Reduced pixel i covers source [x_lo + i * rw / iw, x_lo + (i + 1) * rw / iw).
  const double kx = static_cast<double>(iw) / static_cast<double>(rw);
  const double ky = static_cast<double>(ih) / static_cast<double>(rh);
  m.xx *= kx, m.xy *= kx;
  m.x0 = (m.x0 - static_cast<double>(x_lo) + 0.5) * kx - 0.5;
  m.yx *= ky, m.yy *= ky;
  m.y0 = (m.y0 - static_cast<double>(y_lo) + 0.5) * ky - 0.5;
  return true;
}

void check_params(const AugmentParams& p, const AugmentConfig& cfg) {
  // The 32.32 fixed-point coordinates need |coordinate| well below 2^31.
  constexpr int64_t kMaxSide = int64_t{1} << 24;
  RZ_CHECK(p.src_h >= 1 && p.src_w >= 1 && p.src_h <= kMaxSide && p.src_w <= kMaxSide,
           "augment params: source shape must be in [1, 2^24], got ", p.src_h, "x", p.src_w);
  RZ_CHECK(p.crop_h >= 1 && p.crop_w >= 1 && p.crop_y >= 0 && p.crop_x >= 0 &&
               p.crop_y + p.crop_h <= p.src_h && p.crop_x + p.crop_w <= p.src_w,
           "augment params: crop box (y ", p.crop_y, ", x ", p.crop_x, ", h ", p.crop_h, ", w ",
           p.crop_w, ") does not fit the ", p.src_h, "x", p.src_w, " source");
  RZ_CHECK(std::isfinite(p.angle_deg) && std::isfinite(p.contrast) && std::isfinite(p.brightness),
           "augment params: angle, contrast and brightness must be finite, got ", p.angle_deg, ", ",
           p.contrast, ", ", p.brightness);
  for (const DropoutHole& hole : p.holes) {
    RZ_CHECK(hole.h >= 0 && hole.w >= 0 && hole.y >= 0 && hole.x >= 0 &&
                 hole.y + hole.h <= cfg.out_size && hole.x + hole.w <= cfg.out_size,
             "augment params: hole (y ", hole.y, ", x ", hole.x, ", h ", hole.h, ", w ", hole.w,
             ") outside the ", cfg.out_size, "x", cfg.out_size, " output");
  }
}

}  // namespace

void check_augment_config(const AugmentConfig& cfg) {
  RZ_CHECK(cfg.out_size >= 1 && cfg.out_size <= (int64_t{1} << 20),
           "augment config: out_size must be in [1, 2^20], got ", cfg.out_size);
  RZ_CHECK(cfg.eval_crop_fraction > 0.0 && cfg.eval_crop_fraction <= 1.0,
           "augment config: eval_crop_fraction must be in (0, 1], got ", cfg.eval_crop_fraction);
  RZ_CHECK(is_range(cfg.crop_scale) && cfg.crop_scale[0] > 0.0,
           "augment config: crop_scale must be 0 < lo <= hi, got [", cfg.crop_scale[0], ", ",
           cfg.crop_scale[1], "]");
  RZ_CHECK(is_range(cfg.crop_ratio) && cfg.crop_ratio[0] > 0.0,
           "augment config: crop_ratio must be 0 < lo <= hi, got [", cfg.crop_ratio[0], ", ",
           cfg.crop_ratio[1], "]");
  RZ_CHECK(is_probability(cfg.hflip_prob) && is_probability(cfg.rotate_prob) &&
               is_probability(cfg.brightness_contrast_prob) && is_probability(cfg.dropout_prob),
           "augment config: probabilities must be in [0, 1], got hflip ", cfg.hflip_prob,
           ", rotate ", cfg.rotate_prob, ", brightness_contrast ", cfg.brightness_contrast_prob,
           ", dropout ", cfg.dropout_prob);
  RZ_CHECK(is_range(cfg.rotate_deg), "augment config: rotate_deg must be lo <= hi, got [",
           cfg.rotate_deg[0], ", ", cfg.rotate_deg[1], "]");
  RZ_CHECK(is_range(cfg.brightness_range), "augment config: brightness_range must be lo <= hi");
  RZ_CHECK(is_range(cfg.contrast_range) && cfg.contrast_range[0] >= -1.0,
           "augment config: contrast_range must be -1 <= lo <= hi, got [", cfg.contrast_range[0],
           ", ", cfg.contrast_range[1], "]");
  RZ_CHECK(cfg.min_holes >= 0 && cfg.min_holes <= cfg.max_holes,
           "augment config: holes must be 0 <= min_holes <= max_holes, got ", cfg.min_holes, ", ",
           cfg.max_holes);
  for (const auto& r : {cfg.hole_height_frac, cfg.hole_width_frac}) {
    RZ_CHECK(is_range(r) && r[0] > 0.0 && r[1] <= 1.0,
             "augment config: hole size fractions must be 0 < lo <= hi <= 1, got [", r[0], ", ",
             r[1], "]");
  }
  RZ_CHECK(cfg.prefilter_above >= 1.0, "augment config: prefilter_above must be >= 1, got ",
           cfg.prefilter_above);
}

AugmentParams identity_params(int64_t src_h, int64_t src_w) {
  AugmentParams p;
  p.src_h = src_h, p.src_w = src_w;
  p.crop_h = src_h, p.crop_w = src_w;
  return p;
}

AugmentParams sample_augment(const AugmentConfig& cfg, int64_t src_h, int64_t src_w,
                             Generator& gen) {
  check_augment_config(cfg);
  RZ_CHECK(src_h >= 1 && src_w >= 1, "sample_augment: bad source shape ", src_h, "x", src_w);
  AugmentParams p = identity_params(src_h, src_w);
  const double h = static_cast<double>(src_h), w = static_cast<double>(src_w);

  if (!cfg.train) {
    p.crop_h = std::clamp(static_cast<int64_t>(std::nearbyint(h * cfg.eval_crop_fraction)),
                          int64_t{1}, src_h);
    p.crop_w = std::clamp(static_cast<int64_t>(std::nearbyint(w * cfg.eval_crop_fraction)),
                          int64_t{1}, src_w);
    p.crop_y = (src_h - p.crop_h) / 2;
    p.crop_x = (src_w - p.crop_w) / 2;
    return p;
  }

  // torchvision RandomResizedCrop.get_params (round() is half-to-even there
  // and in std::nearbyint under the default rounding mode).
  const double area = h * w;
  const double log_r0 = std::log(cfg.crop_ratio[0]), log_r1 = std::log(cfg.crop_ratio[1]);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target_area = area * gen.uniform(cfg.crop_scale[0], cfg.crop_scale[1]);
    const double ratio = std::exp(gen.uniform(log_r0, log_r1));
    const double cw = std::nearbyint(std::sqrt(target_area * ratio));
    const double ch = std::nearbyint(std::sqrt(target_area / ratio));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      p.crop_w = static_cast<int64_t>(cw), p.crop_h = static_cast<int64_t>(ch);
      p.crop_y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(src_h - p.crop_h + 1)));
      p.crop_x = static_cast<int64_t>(gen.below(static_cast<uint64_t>(src_w - p.crop_w + 1)));
      found = true;
    }
  }
  if (!found) {  // central crop, ratio clamped to crop_ratio
    const double in_ratio = w / h;
    if (in_ratio < cfg.crop_ratio[0]) {
      p.crop_w = src_w;
      p.crop_h = std::clamp(static_cast<int64_t>(std::nearbyint(w / cfg.crop_ratio[0])), int64_t{1},
                            src_h);
    } else if (in_ratio > cfg.crop_ratio[1]) {
      p.crop_h = src_h;
      p.crop_w = std::clamp(static_cast<int64_t>(std::nearbyint(h * cfg.crop_ratio[1])), int64_t{1},
                            src_w);
    }
    p.crop_y = (src_h - p.crop_h) / 2;
    p.crop_x = (src_w - p.crop_w) / 2;
  }

  p.hflip = gen.uniform() < cfg.hflip_prob;

  if (gen.uniform() < cfg.rotate_prob)
    p.angle_deg = gen.uniform(cfg.rotate_deg[0], cfg.rotate_deg[1]);

  if (gen.uniform() < cfg.brightness_contrast_prob) {
    p.contrast = gen.uniform(cfg.contrast_range[0], cfg.contrast_range[1]);
    p.brightness = gen.uniform(cfg.brightness_range[0], cfg.brightness_range[1]);
  }

  if (gen.uniform() < cfg.dropout_prob) {
    const int64_t s = cfg.out_size;
    const auto count =
        cfg.min_holes +
        static_cast<int64_t>(gen.below(static_cast<uint64_t>(cfg.max_holes - cfg.min_holes + 1)));
    const auto side = [&](const std::array<double, 2>& frac) {
      const double v = static_cast<double>(s) * gen.uniform(frac[0], frac[1]);
      return std::clamp<int64_t>(static_cast<int64_t>(v), 1, s);  // int(): truncation
    };
    p.holes.reserve(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      DropoutHole hole;
      hole.h = side(cfg.hole_height_frac);
      hole.w = side(cfg.hole_width_frac);
      hole.y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(s - hole.h + 1)));
      hole.x = static_cast<int64_t>(gen.below(static_cast<uint64_t>(s - hole.w + 1)));
      p.holes.push_back(hole);
    }
  }
  return p;
}

AffineMap output_to_source(const AugmentParams& p, const AugmentConfig& cfg) {
  // Undo, from the output side: flip (u' = S - 1 - u), rotation about the
  // centre c = (S - 1) / 2 (the forward map is cv2.getRotationMatrix2D's
  // d = [[cos, sin], [-sin, cos]] (p - c) + c, so p = R^T (d - c) + c), then
  // the crop-resize (x = (p + 0.5) * crop / S - 0.5 + crop_origin).
  const double s = static_cast<double>(cfg.out_size);
  const double c = (s - 1.0) / 2.0;
  const double flip_scale = p.hflip ? -1.0 : 1.0;
  const double flip_offset = p.hflip ? s - 1.0 : 0.0;
  double sn = 0, cs = 1;
  sincos_deg(p.angle_deg, sn, cs);
  const double sx = static_cast<double>(p.crop_w) / s;
  const double sy = static_cast<double>(p.crop_h) / s;
  AffineMap m;
  m.xx = sx * cs * flip_scale;
  m.xy = -sx * sn;
  m.x0 =
      sx * (cs * (flip_offset - c) + sn * c + c) + 0.5 * sx - 0.5 + static_cast<double>(p.crop_x);
  m.yx = sy * sn * flip_scale;
  m.yy = sy * cs;
  m.y0 =
      sy * (sn * (flip_offset - c) - cs * c + c) + 0.5 * sy - 0.5 + static_cast<double>(p.crop_y);
  return m;
}

AffineMap source_to_output(const AugmentParams& p, const AugmentConfig& cfg) {
  const AffineMap m = output_to_source(p, cfg);
  const double det = m.xx * m.yy - m.xy * m.yx;
  RZ_CHECK(det != 0.0 && std::isfinite(det), "source_to_output: singular map");
  AffineMap inv;
  inv.xx = m.yy / det;
  inv.xy = -m.xy / det;
  inv.yx = -m.yx / det;
  inv.yy = m.xx / det;
  inv.x0 = -(inv.xx * m.x0 + inv.xy * m.y0);
  inv.y0 = -(inv.yx * m.x0 + inv.yy * m.y0);
  return inv;
}

std::vector<std::array<float, 2>> map_points(const std::vector<std::array<float, 2>>& points,
                                             const AugmentParams& params,
                                             const AugmentConfig& cfg) {
  check_augment_config(cfg);
  check_params(params, cfg);
  const AffineMap m = source_to_output(params, cfg);
  std::vector<std::array<float, 2>> out;
  out.reserve(points.size());
  for (const auto& pt : points) {
    const double x = pt[0], y = pt[1];
    out.push_back({static_cast<float>(m.xx * x + m.xy * y + m.x0),
                   static_cast<float>(m.yx * x + m.yy * y + m.y0)});
  }
  return out;
}

Image apply_augment(const Image& src, const AugmentParams& params, const AugmentConfig& cfg) {
  check_image(src, "apply_augment");
  check_augment_config(cfg);
  check_params(params, cfg);
  RZ_CHECK(src.height == params.src_h && src.width == params.src_w, "apply_augment: image is ",
           src.height, "x", src.width, " but the params were drawn for ", params.src_h, "x",
           params.src_w);

  AffineMap m = output_to_source(params, cfg);
  Image reduced;
  const Image& input = area_prefilter(src, m, cfg, reduced) ? reduced : src;

  Image out(cfg.out_size, cfg.out_size, src.channels);
  if (params.contrast != 0.0 || params.brightness != 0.0) {
    const auto lut = brightness_contrast_lut(params.contrast, params.brightness);
    warp_dispatch<true>(input, out, m, cfg.border_mode, cfg.border_value, lut.data());
  } else {
    warp_dispatch<false>(input, out, m, cfg.border_mode, cfg.border_value, nullptr);
  }

  for (const DropoutHole& hole : params.holes) {
    for (int64_t y = hole.y; y < hole.y + hole.h; ++y) {
      uint8_t* row = out.row(y) + hole.x * out.channels;
      std::fill(row, row + hole.w * out.channels, cfg.hole_fill);
    }
  }
  return out;
}

}  // namespace rz::data
