// Annotation drawing: exact pixel bands of known lines, scaling from original
// to working coordinates, the palette, clipping, and the scanline capsule
// against a brute-force distance test.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "data/draw.h"
#include "engine/error.h"
#include "engine/generator.h"

using rz::data::Image;

namespace {

Image gray(int64_t h, int64_t w, uint8_t v = 200) {
  Image img(h, w, 1);
  std::fill(img.pixels.begin(), img.pixels.end(), v);
  return img;
}

rz::Annotation line(int label, std::vector<std::array<float, 2>> pts) {
  rz::Annotation a;
  a.uid = "1.2.3";
  a.label = label;
  a.points = std::move(pts);
  return a;
}

bool has_colour(const Image& img, int64_t y, int64_t x, const std::array<uint8_t, 3>& c) {
  return img.at(y, x, 0) == c[0] && img.at(y, x, 1) == c[1] && img.at(y, x, 2) == c[2];
}

// Number of elements equal to v.
int64_t count_value(const Image& img, uint8_t v) {
  return std::count(img.pixels.begin(), img.pixels.end(), v);
}

double dist_to_segment(double px, double py, double ax, double ay, double bx, double by) {
  const double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0.0;
  t = std::clamp(t, 0.0, 1.0);
  return std::hypot(px - (ax + t * dx), py - (ay + t * dy));
}

}  // namespace

TEST_CASE("draw: a horizontal line colours exactly its band") {
  const auto& red = rz::data::kAnnotationPalette[0];
  const Image img = gray(40, 50);
  const std::vector<rz::Annotation> anns = {line(0, {{10, 20}, {30, 20}})};

  // Colour, thickness 3 (radius 1.5): rows 19..21, columns 9..31 (the round
  // caps reach x = 9 and 31 on all three rows: sqrt(2) <= 1.5).
  const Image c = rz::data::draw_annotations_color(img, anns, 40, 50, 3.0f);
  REQUIRE(c.channels == 3);
  int64_t painted = 0;
  for (int64_t y = 0; y < 40; ++y) {
    for (int64_t x = 0; x < 50; ++x) {
      const bool in_band = y >= 19 && y <= 21 && x >= 9 && x <= 31;
      painted += has_colour(c, y, x, red);
      CHECK(has_colour(c, y, x, red) == in_band);
    }
  }
  CHECK(painted == 69);

  // Seed, thickness 2 at scale 1 (radius 1): rows 19..21 over x 10..30 and
  // the cap tips (9, 20), (31, 20), in black.
  const Image s = rz::data::draw_annotations_seed(img, anns, 40, 50);
  CHECK(s.channels == 1);
  CHECK(count_value(s, 0) == 3 * 21 + 2);
  CHECK(s.at(20, 9) == 0);
  CHECK(s.at(19, 9) == 200);
  CHECK(s.at(19, 10) == 0);
  CHECK(s.at(22, 20) == 200);
}

TEST_CASE("draw: original coordinates are scaled to the working size") {
  const Image img = gray(40, 50);
  // Original 80x100: scale 0.5, so (20, 40)-(60, 40) lands on (10, 20)-(30, 20).
  const std::vector<rz::Annotation> anns = {line(5, {{20, 40}, {60, 40}})};
  const Image c = rz::data::draw_annotations_color(img, anns, 80, 100, 3.0f);
  const auto& pink = rz::data::kAnnotationPalette[5];
  int64_t painted = 0;
  for (int64_t y = 19; y <= 21; ++y) {
    for (int64_t x = 9; x <= 31; ++x) painted += has_colour(c, y, x, pink);
  }
  CHECK(painted == 69);
  // Seed thickness 2 original pixels -> 1 working pixel: just row 20, x 10..30.
  const Image s = rz::data::draw_annotations_seed(img, anns, 80, 100);
  CHECK(count_value(s, 0) == 21);
  for (int64_t x = 10; x <= 30; ++x) CHECK(s.at(20, x) == 0);
  // At scale 0.25 the seed thickness (0.5) is raised to one pixel.
  const Image q = rz::data::draw_annotations_seed(img, {line(0, {{40, 80}, {120, 80}})}, 160, 200);
  CHECK(count_value(q, 0) == 21);
}

TEST_CASE("draw: colour style uses each label's palette entry") {
  std::set<std::array<uint8_t, 3>> distinct(rz::data::kAnnotationPalette.begin(),
                                            rz::data::kAnnotationPalette.end());
  CHECK(distinct.size() == rz::data::kAnnotationPalette.size());
  for (const auto& col : rz::data::kAnnotationPalette) {
    CHECK_FALSE((col[0] == col[1] && col[1] == col[2]));  // never a gray
  }
  const Image img = gray(30, 30, 50);
  std::vector<rz::Annotation> anns;
  for (int label = 0; label < rz::kNumRanzcrLabels; ++label) {
    anns.push_back(
        line(label, {{2.0f + 2.5f * float(label), 5}, {2.0f + 2.5f * float(label), 25}}));
  }
  const Image c =
      rz::data::draw_annotations(img, anns, 30, 30, rz::data::AnnotationStyle::color, 1.0f);
  for (int label = 0; label < rz::kNumRanzcrLabels; ++label) {
    const int64_t x = std::lround(2.0 + 2.5 * label);
    CHECK(has_colour(c, 15, x, rz::data::kAnnotationPalette[size_t(label)]));
  }
  CHECK(has_colour(c, 1, 1, {50, 50, 50}));
  // A single point is a dot: radius 1.5 covers the 3x3 block.
  const Image d = rz::data::draw_annotations_color(img, {line(9, {{10, 10}})}, 30, 30, 3.0f);
  int64_t dot = 0;
  for (int64_t y = 0; y < 30; ++y) {
    for (int64_t x = 0; x < 30; ++x) dot += has_colour(d, y, x, rz::data::kAnnotationPalette[9]);
  }
  CHECK(dot == 9);
}

TEST_CASE("draw: device style colours a line by its device, not its status") {
  // The RANZCR label groups: ETT 0-2, NGT 3-6, CVC 7-9, Swan-Ganz 10.
  const int expected_device[rz::kNumRanzcrLabels] = {0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3};
  std::set<std::array<uint8_t, 3>> distinct(rz::data::kDevicePalette.begin(), rz::data::kDevicePalette.end());
  CHECK(distinct.size() == 4);
  for (const auto& col : rz::data::kDevicePalette) CHECK_FALSE((col[0] == col[1] && col[1] == col[2]));
  const Image img = gray(30, 30, 50);
  std::vector<rz::Annotation> anns;
  for (int label = 0; label < rz::kNumRanzcrLabels; ++label) {
    CHECK(rz::data::device_of_label(label) == expected_device[label]);
    anns.push_back(line(label, {{2.0f + 2.5f * float(label), 5}, {2.0f + 2.5f * float(label), 25}}));
  }
  const Image c = rz::data::draw_annotations(img, anns, 30, 30, rz::data::AnnotationStyle::device, 1.0f);
  CHECK(c.channels == 3);
  for (int label = 0; label < rz::kNumRanzcrLabels; ++label) {
    const int64_t x = std::lround(2.0 + 2.5 * label);
    CHECK(has_colour(c, 15, x, rz::data::kDevicePalette[size_t(expected_device[label])]));
  }
  CHECK(has_colour(c, 1, 1, {50, 50, 50}));
  // Two statuses of one device look the same; the same lines in colour style differ.
  const Image normal = rz::data::draw_annotations_device(img, {line(9, {{4, 4}, {20, 20}})}, 30, 30, 2.0f);
  const Image abnormal = rz::data::draw_annotations_device(img, {line(7, {{4, 4}, {20, 20}})}, 30, 30, 2.0f);
  CHECK(normal.pixels == abnormal.pixels);
  CHECK(rz::data::draw_annotations_color(img, {line(9, {{4, 4}, {20, 20}})}, 30, 30, 2.0f).pixels !=
        rz::data::draw_annotations_color(img, {line(7, {{4, 4}, {20, 20}})}, 30, 30, 2.0f).pixels);
  CHECK_THROWS_AS(rz::data::draw_annotations_device(img, {line(11, {{1, 1}, {2, 2}})}, 20, 30), rz::Error);
  CHECK(rz::data::parse_annotation_style("device") == rz::data::AnnotationStyle::device);
  CHECK(rz::data::parse_annotation_style("seed") == rz::data::AnnotationStyle::seed);
  CHECK(rz::data::parse_annotation_style("color") == rz::data::AnnotationStyle::color);
  CHECK_THROWS_WITH_AS(rz::data::parse_annotation_style("colour"), doctest::Contains("'colour'"), rz::Error);
}

TEST_CASE("draw: points outside the image are clipped safely") {
  const Image img = gray(20, 30);
  // Crosses the image horizontally: the visible part is all of row 10.
  const Image a =
      rz::data::draw_annotations_color(img, {line(1, {{-50, 10}, {200, 10}})}, 20, 30, 1.0f);
  int64_t painted = 0;
  for (int64_t x = 0; x < 30; ++x) painted += has_colour(a, 10, x, rz::data::kAnnotationPalette[1]);
  CHECK(painted == 30);
  // Entirely outside, or absurdly far: nothing drawn, no crash.
  const Image b = rz::data::draw_annotations_seed(
      img, {line(0, {{-100, -100}, {-50, -80}}), line(0, {{1e9f, 5}, {2e9f, -1e9f}})}, 20, 30,
      4.0f);
  CHECK(b.pixels == img.pixels);
  // A diagonal that enters through a corner draws only its visible part.
  const Image c =
      rz::data::draw_annotations_seed(img, {line(0, {{-10, -10}, {5, 5}})}, 20, 30, 1.0f);
  for (int64_t i = 0; i <= 5; ++i) CHECK(c.at(i, i) == 0);
  CHECK(count_value(c, 0) == 6);
  // Non-finite points are an error, not a silent skip.
  CHECK_THROWS_AS(rz::data::draw_annotations_seed(img, {line(0, {{NAN, 1}, {2, 2}})}, 20, 30),
                  rz::Error);
  CHECK_THROWS_AS(rz::data::draw_annotations_color(img, {line(11, {{1, 1}, {2, 2}})}, 20, 30),
                  rz::Error);
}

TEST_CASE("draw: an empty annotation list returns the input (gray replicated for colour)") {
  Image img(7, 9, 1);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 3);
  const Image s =
      rz::data::draw_annotations(img, {}, 100, 100, rz::data::AnnotationStyle::seed, 2.0f);
  CHECK(s.pixels == img.pixels);
  const Image c =
      rz::data::draw_annotations(img, {}, 100, 100, rz::data::AnnotationStyle::color, 3.0f);
  CHECK(c.pixels == rz::data::gray_to_rgb(img).pixels);
}

TEST_CASE("draw: the scanline capsule equals the brute-force distance test") {
  rz::Generator gen(31);
  const uint8_t ink = 255;
  for (int trial = 0; trial < 200; ++trial) {
    Image img(24, 32, 1);
    const auto coord = [&](double n) { return static_cast<float>(gen.uniform(-8.0, n + 8.0)); };
    const float ax = coord(32), ay = coord(24), bx = coord(32), by = coord(24);
    const float t = static_cast<float>(gen.uniform(1.0, 7.0));
    rz::data::draw_thick_segment(img, ax, ay, bx, by, t, &ink);
    int mismatches = 0;
    for (int64_t y = 0; y < 24; ++y) {
      for (int64_t x = 0; x < 32; ++x) {
        const double d = dist_to_segment(double(x), double(y), ax, ay, bx, by);
        // Pixels within 1e-6 of the edge may go either way in floating point.
        if (std::abs(d - t / 2.0) < 1e-6) continue;
        mismatches += (img.at(y, x) == ink) != (d <= t / 2.0);
      }
    }
    REQUIRE_MESSAGE(mismatches == 0, "segment (", ax, ", ", ay, ") - (", bx, ", ", by, ") t ", t);
  }
}
