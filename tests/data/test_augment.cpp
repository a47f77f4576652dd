// Augmentations: exact geometry cases (identity, quarter turns, flip), a
// double-precision bilinear reference for the border modes, seeded
// reproducibility, parameter ranges, brightness/contrast by formula, coarse
// dropout, paired teacher/student outputs, map_points against the warp, the
// area prefilter on thin lines, eval mode and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "data/augment.h"
#include "data/draw.h"
#include "data/resize.h"
#include "engine/error.h"
#include "engine/generator.h"

using rz::data::AugmentConfig;
using rz::data::AugmentParams;
using rz::data::BorderMode;
using rz::data::Image;

namespace {

Image random_image(int64_t h, int64_t w, int64_t c, uint64_t seed) {
  Image img(h, w, c);
  rz::Generator gen(seed);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(gen.below(256));
  return img;
}

Image constant_image(int64_t h, int64_t w, int64_t c, uint8_t v) {
  Image img(h, w, c);
  std::fill(img.pixels.begin(), img.pixels.end(), v);
  return img;
}

// A smooth image with some texture (like an X-ray more than noise is).
Image smooth_image(int64_t h, int64_t w) {
  Image img(h, w, 1);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const double v = 128 + 60 * std::sin(0.11 * static_cast<double>(x)) +
                       50 * std::cos(0.07 * static_cast<double>(y + x / 3));
      img.at(y, x) = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  }
  return img;
}

AugmentConfig no_random_config(int64_t out_size) {
  AugmentConfig cfg;
  cfg.out_size = out_size;
  cfg.hflip_prob = 0, cfg.rotate_prob = 0, cfg.brightness_contrast_prob = 0, cfg.dropout_prob = 0;
  return cfg;
}

int max_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  int m = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    m = std::max(m, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  }
  return m;
}

// Independent reference: bilinear in double with the border modes written
// out again.
int64_t ref_index(int64_t i, int64_t n, BorderMode mode) {
  if (i >= 0 && i < n) return i;
  if (mode == BorderMode::constant) return -1;
  if (mode == BorderMode::replicate) return std::clamp<int64_t>(i, 0, n - 1);
  while (i < 0 || i >= n) {  // reflect101 without the modulo trick
    if (n == 1) return 0;
    i = i < 0 ? -i : 2 * (n - 1) - i;
  }
  return i;
}

Image reference_warp(const Image& src, const rz::data::AffineMap& m, int64_t out_size,
                     BorderMode mode, uint8_t border_value) {
  Image out(out_size, out_size, src.channels);
  for (int64_t v = 0; v < out_size; ++v) {
    for (int64_t u = 0; u < out_size; ++u) {
      const double x = m.xx * double(u) + m.xy * double(v) + m.x0;
      const double y = m.yx * double(u) + m.yy * double(v) + m.y0;
      const double fx = std::floor(x), fy = std::floor(y);
      const double ax = x - fx, ay = y - fy;
      for (int64_t c = 0; c < src.channels; ++c) {
        double acc = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            // Constant mode: samples within the image's extent
            // [-0.5, n - 0.5] read the edge pixel instead of the border.
            const auto inside = [](double t, int64_t n) {
              return t >= -0.5 && t <= double(n) - 0.5;
            };
            const bool cx = mode == BorderMode::constant && inside(x, src.width);
            const bool cy = mode == BorderMode::constant && inside(y, src.height);
            int64_t yi = ref_index(int64_t(fy) + dy, src.height, mode);
            int64_t xi = ref_index(int64_t(fx) + dx, src.width, mode);
            if (cy) yi = std::clamp<int64_t>(int64_t(fy) + dy, 0, src.height - 1);
            if (cx) xi = std::clamp<int64_t>(int64_t(fx) + dx, 0, src.width - 1);
            const double val = (yi < 0 || xi < 0) ? border_value : src.at(yi, xi, c);
            acc += val * (dx ? ax : 1 - ax) * (dy ? ay : 1 - ay);
          }
        }
        out.at(v, u, c) = static_cast<uint8_t>(std::lround(acc));
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("augment: identity params reproduce the source exactly") {
  for (const int64_t c : {1, 3, 4}) {
    for (const BorderMode mode :
         {BorderMode::constant, BorderMode::replicate, BorderMode::reflect101}) {
      const Image src = random_image(37, 37, c, 1 + uint64_t(c));
      AugmentConfig cfg = no_random_config(37);
      cfg.border_mode = mode;
      cfg.border_value = 99;
      const Image out = rz::data::apply_augment(src, rz::data::identity_params(37, 37), cfg);
      CHECK(out.channels == c);
      CHECK(out.pixels == src.pixels);
    }
  }
}

TEST_CASE("augment: quarter turns are exact transposes and flips") {
  const int64_t s = 32;
  for (const int64_t c : {1, 3}) {
    const Image src = random_image(s, s, c, 11);
    const AugmentConfig cfg = no_random_config(s);
    for (const double angle : {90.0, -90.0, 180.0, 450.0}) {
      AugmentParams p = rz::data::identity_params(s, s);
      p.angle_deg = angle;
      const Image out = rz::data::apply_augment(src, p, cfg);
      int worst = 0;
      for (int64_t v = 0; v < s; ++v) {
        for (int64_t u = 0; u < s; ++u) {
          // Counter-clockwise on screen: +90 sends source (x, y) to (y, S-1-x).
          int64_t sy = u, sx = s - 1 - v;                      // +90 (and 450)
          if (angle == -90.0) sy = s - 1 - u, sx = v;          // -90
          if (angle == 180.0) sy = s - 1 - v, sx = s - 1 - u;  // 180
          for (int64_t ch = 0; ch < c; ++ch) {
            worst = std::max(worst, std::abs(int(out.at(v, u, ch)) - int(src.at(sy, sx, ch))));
          }
        }
      }
      CHECK_MESSAGE(worst <= 1, "angle ", angle);
    }
  }
}

TEST_CASE("augment: horizontal flip is exact") {
  const Image src = random_image(20, 20, 3, 5);
  AugmentParams p = rz::data::identity_params(20, 20);
  p.hflip = true;
  const Image out = rz::data::apply_augment(src, p, no_random_config(20));
  bool same = true;
  for (int64_t v = 0; v < 20; ++v) {
    for (int64_t u = 0; u < 20; ++u) {
      for (int64_t c = 0; c < 3; ++c) same = same && out.at(v, u, c) == src.at(v, 19 - u, c);
    }
  }
  CHECK(same);
}

TEST_CASE("augment: warp matches a double-precision bilinear reference in every border mode") {
  const Image src = random_image(7, 9, 3, 21);
  AugmentConfig cfg = no_random_config(12);
  AugmentParams p = rz::data::identity_params(7, 9);
  p.crop_y = 1, p.crop_x = 2, p.crop_h = 5, p.crop_w = 6;
  p.angle_deg = 33.0;
  p.hflip = true;
  for (const BorderMode mode :
       {BorderMode::constant, BorderMode::replicate, BorderMode::reflect101}) {
    cfg.border_mode = mode;
    cfg.border_value = 200;
    const Image out = rz::data::apply_augment(src, p, cfg);
    const Image ref =
        reference_warp(src, rz::data::output_to_source(p, cfg), 12, mode, cfg.border_value);
    CHECK(max_abs_diff(out, ref) <= 1);
  }
}

TEST_CASE("augment: border modes on a small image") {
  // A 45-degree turn of a 16x16 image: output corner (0, 0) reads source
  // (x 7.5, y -3.1), i.e. rows -4 and -3, entirely outside.
  const int64_t s = 16;
  Image src(s, s, 1);
  for (int64_t y = 0; y < s; ++y) {
    for (int64_t x = 0; x < s; ++x) src.at(y, x) = static_cast<uint8_t>(10 * y + x);
  }
  AugmentParams p = rz::data::identity_params(s, s);
  p.angle_deg = 45.0;
  AugmentConfig cfg = no_random_config(s);

  cfg.border_mode = BorderMode::constant;
  cfg.border_value = 250;
  Image out = rz::data::apply_augment(src, p, cfg);
  CHECK(out.at(0, 0) == 250);
  CHECK(out.at(0, s - 1) == 250);
  CHECK(out.at(s - 1, 0) == 250);
  CHECK(out.at(8, 8) < 200);  // the middle is image

  cfg.border_mode = BorderMode::replicate;
  out = rz::data::apply_augment(src, p, cfg);
  CHECK(out.at(0, 0) >= 7);  // row 0 around column 7.5
  CHECK(out.at(0, 0) <= 8);

  cfg.border_mode = BorderMode::reflect101;
  out = rz::data::apply_augment(src, p, cfg);
  // rows -4, -3 reflect to 4, 3 (weights 0.1 / 0.9): about 10 * 3.1 + 7.5.
  CHECK(std::abs(int(out.at(0, 0)) - 39) <= 1);

  // Replicate and reflect101 of a constant image stay constant.
  const Image flat = constant_image(5, 5, 1, 123);
  AugmentParams q = rz::data::identity_params(5, 5);
  q.angle_deg = 30.0;
  for (const BorderMode mode : {BorderMode::replicate, BorderMode::reflect101}) {
    AugmentConfig c5 = no_random_config(5);
    c5.border_mode = mode;
    const Image o = rz::data::apply_augment(flat, q, c5);
    CHECK(std::all_of(o.pixels.begin(), o.pixels.end(), [](uint8_t v) { return v == 123; }));
  }
}

TEST_CASE("augment: same seed gives the same params and output, another seed differs") {
  const Image src = smooth_image(60, 80);
  AugmentConfig cfg;
  cfg.out_size = 48;
  cfg.rotate_prob = 1, cfg.dropout_prob = 1, cfg.brightness_contrast_prob = 1;
  rz::Generator g1(7), g2(7), g3(8);
  const AugmentParams p1 = rz::data::sample_augment(cfg, 60, 80, g1);
  const AugmentParams p2 = rz::data::sample_augment(cfg, 60, 80, g2);
  const AugmentParams p3 = rz::data::sample_augment(cfg, 60, 80, g3);
  CHECK(p1 == p2);
  CHECK_FALSE(p1 == p3);
  const Image o1 = rz::data::apply_augment(src, p1, cfg);
  const Image o2 = rz::data::apply_augment(src, p2, cfg);
  const Image o3 = rz::data::apply_augment(src, p3, cfg);
  CHECK(o1.pixels == o2.pixels);
  CHECK(o1.pixels != o3.pixels);
  // The stream continues identically too.
  CHECK(rz::data::sample_augment(cfg, 60, 80, g1) == rz::data::sample_augment(cfg, 60, 80, g2));
}

TEST_CASE("augment: sampled params stay within the configured ranges") {
  AugmentConfig cfg;  // defaults: scale 0.85..1, ratio 3/4..4/3, +-10 degrees
  cfg.out_size = 256;
  cfg.dropout_prob = 1.0;
  cfg.min_holes = 2, cfg.max_holes = 6;
  const int64_t h = 600, w = 600;  // ratios that fit: about 0.85..1.18
  rz::Generator gen(123);
  const int n = 3000;
  int flips = 0, rotated = 0, adjusted = 0, full_crops = 0;
  double min_scale = 9, max_scale = 0, min_ratio = 9, max_ratio = 0;
  double min_angle = 99, max_angle = -99;
  int64_t min_holes = 99, max_holes = 0;
  for (int i = 0; i < n; ++i) {
    const AugmentParams p = rz::data::sample_augment(cfg, h, w, gen);
    REQUIRE(p.crop_y >= 0);
    REQUIRE(p.crop_x >= 0);
    REQUIRE(p.crop_y + p.crop_h <= h);
    REQUIRE(p.crop_x + p.crop_w <= w);
    const double scale = double(p.crop_h * p.crop_w) / double(h * w);
    const double ratio = double(p.crop_w) / double(p.crop_h);
    if (p.crop_h == h && p.crop_w == w) {
      ++full_crops;  // the fallback (or a draw that rounded to the whole image)
    } else {
      CHECK(scale >= 0.85 - 0.005);
      CHECK(scale <= 1.0 + 0.005);
      CHECK(ratio >= 0.75 - 0.005);
      CHECK(ratio <= 4.0 / 3.0 + 0.005);
      min_scale = std::min(min_scale, scale), max_scale = std::max(max_scale, scale);
      min_ratio = std::min(min_ratio, ratio), max_ratio = std::max(max_ratio, ratio);
    }
    flips += p.hflip;
    if (p.angle_deg != 0) {
      ++rotated;
      CHECK(p.angle_deg >= -10.0);
      CHECK(p.angle_deg <= 10.0);
      min_angle = std::min(min_angle, p.angle_deg), max_angle = std::max(max_angle, p.angle_deg);
    }
    if (p.contrast != 0 || p.brightness != 0) {
      ++adjusted;
      CHECK(std::abs(p.contrast) <= 0.2);
      CHECK(std::abs(p.brightness) <= 0.2);
    }
    const auto holes = static_cast<int64_t>(p.holes.size());
    min_holes = std::min(min_holes, holes), max_holes = std::max(max_holes, holes);
    for (const auto& hole : p.holes) {
      CHECK(hole.h >= int64_t(256 * 0.05));
      CHECK(hole.h <= int64_t(256 * 0.1));
      CHECK(hole.w >= int64_t(256 * 0.05));
      CHECK(hole.w <= int64_t(256 * 0.1));
      CHECK(hole.y + hole.h <= 256);
      CHECK(hole.x + hole.w <= 256);
    }
  }
  // The draws cover their ranges and the probabilities are about right
  // (each fraction is within ~5 standard deviations).
  CHECK(min_scale < 0.86);
  CHECK(max_scale > 0.97);
  CHECK(min_ratio < 0.87);
  CHECK(max_ratio > 1.13);
  CHECK(min_angle < -9.8);
  CHECK(max_angle > 9.8);
  CHECK(min_holes == 2);
  CHECK(max_holes == 6);
  CHECK(std::abs(double(flips) / n - 0.5) < 0.05);
  CHECK(std::abs(double(rotated) / n - 0.5) < 0.05);
  CHECK(std::abs(double(adjusted) / n - 0.5) < 0.05);
  CHECK(full_crops < n / 2);
}

TEST_CASE("augment: crop fallback is a central crop with the ratio clamped") {
  // A 10x1000 strip: no 3/4..4/3 crop of >= 85% of the area fits.
  AugmentConfig cfg = no_random_config(16);
  rz::Generator gen(3);
  const AugmentParams p = rz::data::sample_augment(cfg, 10, 1000, gen);
  CHECK(p.crop_h == 10);
  CHECK(p.crop_w == 13);  // round(10 * 4/3)
  CHECK(p.crop_y == 0);
  CHECK(p.crop_x == (1000 - 13) / 2);
}

TEST_CASE("augment: brightness/contrast on a constant image follows the formula") {
  struct Case {
    double contrast, brightness;
  };
  for (const Case k : {Case{0.1, -0.05}, Case{-0.2, 0.15}, Case{0.0, 0.2}, Case{0.2, 0.0}}) {
    for (const int v : {0, 37, 128, 200, 255}) {
      const Image src = constant_image(9, 9, 3, static_cast<uint8_t>(v));
      AugmentParams p = rz::data::identity_params(9, 9);
      p.contrast = k.contrast, p.brightness = k.brightness;
      const Image out = rz::data::apply_augment(src, p, no_random_config(9));
      const double expected =
          std::floor(std::clamp(v * (1 + k.contrast) + k.brightness * 255, 0.0, 255.0));
      CHECK_MESSAGE(std::all_of(out.pixels.begin(), out.pixels.end(),
                                [&](uint8_t o) { return o == expected; }),
                    "v ", v, " contrast ", k.contrast, " brightness ", k.brightness);
    }
  }
  // The constant border keeps its value (brightness acts on the source).
  const Image src = constant_image(16, 16, 1, 100);
  AugmentParams p = rz::data::identity_params(16, 16);
  p.angle_deg = 45, p.brightness = 0.2;
  AugmentConfig cfg = no_random_config(16);
  cfg.border_value = 7;
  const Image out = rz::data::apply_augment(src, p, cfg);
  CHECK(out.at(0, 0) == 7);
  CHECK(out.at(8, 8) == 151);  // trunc(100 + 51)
}

TEST_CASE("augment: coarse dropout fills holes with the fill value, counts within limits") {
  AugmentConfig cfg = no_random_config(64);
  cfg.dropout_prob = 1.0;
  cfg.min_holes = 2, cfg.max_holes = 4;
  cfg.hole_fill = 77;
  const Image src = constant_image(80, 80, 3, 200);
  rz::Generator gen(9);
  for (int i = 0; i < 40; ++i) {
    const AugmentParams p = rz::data::sample_augment(cfg, 80, 80, gen);
    CHECK(p.holes.size() >= 2);
    CHECK(p.holes.size() <= 4);
    const Image out = rz::data::apply_augment(src, p, cfg);
    for (int64_t y = 0; y < 64; ++y) {
      for (int64_t x = 0; x < 64; ++x) {
        bool in_hole = false;
        for (const auto& h : p.holes) {
          in_hole = in_hole || (y >= h.y && y < h.y + h.h && x >= h.x && x < h.x + h.w);
        }
        for (int64_t c = 0; c < 3; ++c) REQUIRE(out.at(y, x, c) == (in_hole ? 77 : 200));
      }
    }
  }
  // Probability 0: no holes.
  cfg.dropout_prob = 0;
  CHECK(rz::data::sample_augment(cfg, 80, 80, gen).holes.empty());
}

TEST_CASE("augment: paired teacher/student outputs agree wherever nothing was drawn") {
  // 96x96 working images of a 192x192 original; the teacher has the lines.
  const Image plain = smooth_image(96, 96);
  std::vector<rz::Annotation> anns(2);
  anns[0].label = 2, anns[0].points = {{20, 30}, {90, 60}, {150, 170}};
  anns[1].label = 9, anns[1].points = {{180, 10}, {40, 140}};
  const Image seed = rz::data::draw_annotations_seed(plain, anns, 192, 192);
  const Image color = rz::data::draw_annotations_color(plain, anns, 192, 192, 2.0f);

  // Mask of the drawn pixels, dilated by 2 so that pixels with tiny
  // (rounded-away) interpolation or area weights are counted as touched.
  Image mask(96, 96, 1);
  for (int64_t y = 0; y < 96; ++y) {
    for (int64_t x = 0; x < 96; ++x) {
      bool drawn = false;
      for (int64_t dy = -2; dy <= 2; ++dy) {
        for (int64_t dx = -2; dx <= 2; ++dx) {
          const int64_t yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= 96 || xx < 0 || xx >= 96) continue;
          drawn = drawn || seed.at(yy, xx) != plain.at(yy, xx) ||
                  color.at(yy, xx, 0) != color.at(yy, xx, 1) ||
                  color.at(yy, xx, 1) != color.at(yy, xx, 2);
        }
      }
      mask.at(y, x) = drawn ? 255 : 0;
    }
  }

  AugmentConfig cfg;
  cfg.rotate_prob = 1, cfg.dropout_prob = 1, cfg.brightness_contrast_prob = 1;
  rz::Generator gen(2024);
  for (int i = 0; i < 6; ++i) {
    cfg.border_mode = static_cast<BorderMode>(i % 3);
    // 64: shrink 1.3..1.5, the area-prefilter path; 80: 1.05..1.2, plain bilinear.
    cfg.out_size = i % 2 ? 80 : 64;
    const int64_t s = cfg.out_size;
    const AugmentParams p = rz::data::sample_augment(cfg, 96, 96, gen);
    const Image student = rz::data::apply_augment(plain, p, cfg);
    const Image teacher = rz::data::apply_augment(seed, p, cfg);
    const Image teacher_rgb = rz::data::apply_augment(color, p, cfg);
    AugmentParams geometry_only = p;
    geometry_only.contrast = 0, geometry_only.brightness = 0, geometry_only.holes.clear();
    AugmentConfig mask_cfg = cfg;
    mask_cfg.border_value = 0;
    const Image touched = rz::data::apply_augment(mask, geometry_only, mask_cfg);
    int64_t compared = 0, differ = 0;
    for (int64_t y = 0; y < s; ++y) {
      for (int64_t x = 0; x < s; ++x) {
        differ += teacher.at(y, x) != student.at(y, x);
        if (touched.at(y, x) != 0) continue;
        ++compared;
        REQUIRE(teacher.at(y, x) == student.at(y, x));
        for (int64_t c = 0; c < 3; ++c) REQUIRE(teacher_rgb.at(y, x, c) == student.at(y, x));
      }
    }
    CHECK(compared > s * s / 2);
    CHECK(differ > 50);  // the lines survived the augmentation
  }
}

TEST_CASE("augment: map_points agrees with the image warp") {
  const int64_t h = 80, w = 100;
  AugmentConfig cfg = no_random_config(64);
  cfg.rotate_prob = 1, cfg.hflip_prob = 0.5;
  cfg.rotate_deg = {-30, 30};
  rz::Generator gen(77);
  int checked = 0;
  for (int i = 0; i < 30; ++i) {
    Image src(h, w, 1);
    const float px = 20 + float(gen.below(60)), py = 15 + float(gen.below(50));
    src.at(int64_t(py), int64_t(px)) = 255;
    const AugmentParams p = rz::data::sample_augment(cfg, h, w, gen);
    const auto mapped = rz::data::map_points({{px, py}}, p, cfg);
    if (mapped[0][0] < 2 || mapped[0][0] > 61 || mapped[0][1] < 2 || mapped[0][1] > 61) continue;
    const Image out = rz::data::apply_augment(src, p, cfg);
    // The spot's centre of mass (bilinear / area spread it over a few pixels).
    double sum = 0, sx = 0, sy = 0;
    int64_t best = 0, bx = 0, by = 0;
    for (int64_t y = 0; y < 64; ++y) {
      for (int64_t x = 0; x < 64; ++x) {
        const double v = out.at(y, x);
        sum += v, sx += v * double(x), sy += v * double(y);
        if (out.at(y, x) > best) best = out.at(y, x), bx = x, by = y;
      }
    }
    REQUIRE(sum > 0);
    CHECK(std::abs(sx / sum - mapped[0][0]) <= 0.5);
    CHECK(std::abs(sy / sum - mapped[0][1]) <= 0.5);
    CHECK(std::abs(double(bx) - mapped[0][0]) <= 1.0);
    CHECK(std::abs(double(by) - mapped[0][1]) <= 1.0);
    ++checked;
  }
  CHECK(checked >= 15);

  // source_to_output inverts output_to_source.
  AugmentParams p = rz::data::identity_params(h, w);
  p.crop_x = 5, p.crop_w = 70, p.crop_y = 3, p.crop_h = 60, p.angle_deg = 17, p.hflip = true;
  const auto f = rz::data::output_to_source(p, cfg);
  const auto g = rz::data::source_to_output(p, cfg);
  const double u = 12.5, v = 40.25;
  const double x = f.xx * u + f.xy * v + f.x0, y = f.yx * u + f.yy * v + f.y0;
  CHECK(g.xx * x + g.xy * y + g.x0 == doctest::Approx(u).epsilon(1e-9));
  CHECK(g.yx * x + g.yy * y + g.y0 == doctest::Approx(v).epsilon(1e-9));
}

TEST_CASE("augment: the area prefilter keeps thin lines that bilinear alone drops") {
  // Eight 1-pixel vertical lines at every phase modulo 8 in a 1024x1024
  // source, shrunk 8x. Each should keep its mass (255 / 8 per output row).
  const int64_t n = 1024, s = 128;
  Image src(n, n, 1);
  std::vector<int64_t> xs;
  for (int64_t k = 0; k < 8; ++k) xs.push_back(64 + 120 * k + k);
  for (int64_t y = 0; y < n; ++y) {
    for (const int64_t x : xs) src.at(y, x) = 255;
  }
  const AugmentParams p = rz::data::identity_params(n, n);
  const auto line_mass = [&](const Image& out, int64_t x) {
    const int64_t u = (x + 4) / 8;  // nearest output column, +-2 around it
    int sum = 0;
    for (int64_t du = -2; du <= 2; ++du) sum += out.at(s / 2, u + du);
    return sum;
  };
  AugmentConfig cfg = no_random_config(s);
  const Image filtered = rz::data::apply_augment(src, p, cfg);
  for (const int64_t x : xs) {
    CHECK(line_mass(filtered, x) >= 28);
    CHECK(line_mass(filtered, x) <= 36);
  }
  cfg.prefilter_above = 100;  // plain bilinear
  const Image aliased = rz::data::apply_augment(src, p, cfg);
  int lost = 0;
  for (const int64_t x : xs) lost += line_mass(aliased, x) == 0;
  CHECK(lost >= 4);

  // With an integer factor and no rotation the prefilter is exactly INTER_AREA.
  const Image smooth = smooth_image(256, 256);
  const Image out =
      rz::data::apply_augment(smooth, rz::data::identity_params(256, 256), no_random_config(64));
  CHECK(out.pixels == rz::data::resize_area(smooth, 64, 64).pixels);
}

TEST_CASE("augment: eval mode is deterministic: resize, optional centre crop") {
  AugmentConfig cfg;
  cfg.train = false;
  cfg.out_size = 40;
  rz::Generator gen(5);
  const auto state = gen.state();
  const AugmentParams p = rz::data::sample_augment(cfg, 40, 40, gen);
  CHECK(gen.state() == state);  // nothing drawn
  CHECK(p == rz::data::identity_params(40, 40));
  const Image src = random_image(40, 40, 1, 8);
  CHECK(rz::data::apply_augment(src, p, cfg).pixels == src.pixels);

  cfg.eval_crop_fraction = 0.5;
  cfg.out_size = 32;
  const Image big = random_image(64, 64, 3, 9);
  const AugmentParams c = rz::data::sample_augment(cfg, 64, 64, gen);
  CHECK(c.crop_y == 16);
  CHECK(c.crop_x == 16);
  CHECK(c.crop_h == 32);
  const Image out = rz::data::apply_augment(big, c, cfg);
  bool same = true;
  for (int64_t y = 0; y < 32; ++y) {
    for (int64_t x = 0; x < 32; ++x) {
      for (int64_t ch = 0; ch < 3; ++ch)
        same = same && out.at(y, x, ch) == big.at(y + 16, x + 16, ch);
    }
  }
  CHECK(same);
}

TEST_CASE("augment: invalid configs and mismatched params throw") {
  const Image src = random_image(10, 12, 1, 1);
  const AugmentConfig good = no_random_config(8);
  CHECK_THROWS_AS(rz::data::apply_augment(src, rz::data::identity_params(12, 10), good), rz::Error);
  AugmentParams outside = rz::data::identity_params(10, 12);
  outside.crop_x = 1;  // crop_w 12 no longer fits
  CHECK_THROWS_AS(rz::data::apply_augment(src, outside, good), rz::Error);
  AugmentParams hole = rz::data::identity_params(10, 12);
  hole.holes.push_back({6, 6, 4, 1});
  CHECK_THROWS_AS(rz::data::apply_augment(src, hole, good), rz::Error);

  rz::Generator gen(1);
  AugmentConfig bad = good;
  bad.crop_scale = {0.9, 0.5};
  CHECK_THROWS_AS(rz::data::sample_augment(bad, 10, 12, gen), rz::Error);
  bad = good;
  bad.hflip_prob = 1.5;
  CHECK_THROWS_AS(rz::data::sample_augment(bad, 10, 12, gen), rz::Error);
  bad = good;
  bad.out_size = 0;
  CHECK_THROWS_AS(rz::data::sample_augment(bad, 10, 12, gen), rz::Error);
  bad = good;
  bad.min_holes = 3, bad.max_holes = 2;
  CHECK_THROWS_AS(rz::data::sample_augment(bad, 10, 12, gen), rz::Error);
}
