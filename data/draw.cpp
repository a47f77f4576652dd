// Annotation rasterizer: thick segments with round caps, one exact
// x-interval per row (see data/draw.h).
//
// The capsule around segment AB with radius r is the union of the disc at A,
// the disc at B and the rectangle {P : 0 <= (P - A).D <= |D|^2,
// |(P - A) x D| <= r |D|} (D = B - A). Each part meets a row y in an
// interval; the capsule is convex, so the union of the three intervals is the
// single interval [min lo, max hi]. Pixel centres x in [ceil(lo), floor(hi)]
// are painted. Work: O(rows + painted pixels) per segment.
#include "data/draw.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "engine/error.h"

namespace rz::data {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Restricts [lo, hi] to the px with lo_rhs <= coef * px <= hi_rhs.
void constrain(double coef, double lo_rhs, double hi_rhs, double& lo, double& hi) {
  if (coef == 0.0) {
    if (lo_rhs > 0.0 || hi_rhs < 0.0) lo = kInf, hi = -kInf;
  } else if (coef > 0.0) {
    lo = std::max(lo, lo_rhs / coef), hi = std::min(hi, hi_rhs / coef);
  } else {
    lo = std::max(lo, hi_rhs / coef), hi = std::min(hi, lo_rhs / coef);
  }
}

void draw_polylines(Image& img, const std::vector<Annotation>& annotations, int64_t orig_h,
                    int64_t orig_w, float thickness, AnnotationStyle style) {
  const double sx = static_cast<double>(img.width) / static_cast<double>(orig_w);
  const double sy = static_cast<double>(img.height) / static_cast<double>(orig_h);
  const std::array<uint8_t, 4> black{};
  for (const Annotation& ann : annotations) {
    const uint8_t* colour = black.data();
    if (style != AnnotationStyle::seed) {
      RZ_CHECK(ann.label >= 0 && ann.label < kNumRanzcrLabels, "draw_annotations: annotation of ",
               ann.uid, " has label ", ann.label, ", expected 0..", kNumRanzcrLabels - 1);
      colour = style == AnnotationStyle::color
                   ? kAnnotationPalette[static_cast<size_t>(ann.label)].data()
                   : kDevicePalette[static_cast<size_t>(device_of_label(ann.label))].data();
    }
    const auto& pts = ann.points;
    const auto px = [&](size_t i) { return static_cast<float>(pts[i][0] * sx); };
    const auto py = [&](size_t i) { return static_cast<float>(pts[i][1] * sy); };
    if (pts.size() == 1) draw_thick_segment(img, px(0), py(0), px(0), py(0), thickness, colour);
    for (size_t i = 1; i < pts.size(); ++i) {
      draw_thick_segment(img, px(i - 1), py(i - 1), px(i), py(i), thickness, colour);
    }
  }
}

void check_thickness(float t, const char* what) {
  RZ_CHECK(std::isfinite(t) && t > 0.0f, what, ": thickness must be positive, got ", t);
}

void check_orig_size(int64_t orig_h, int64_t orig_w, const char* what) {
  RZ_CHECK(orig_h >= 1 && orig_w >= 1, what, ": bad original size ", orig_h, "x", orig_w);
}

}  // namespace

void draw_thick_segment(Image& img, float x0, float y0, float x1, float y1, float thickness,
                        const uint8_t* color) {
  RZ_CHECK(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1),
           "draw_thick_segment: non-finite point (", x0, ", ", y0, ") - (", x1, ", ", y1, ")");
  check_thickness(thickness, "draw_thick_segment");
  const double r = std::max(1.0, static_cast<double>(thickness)) / 2.0;
  const double ax = x0, ay = y0, bx = x1, by = y1;
  const double dx = bx - ax, dy = by - ay;
  const double len2 = dx * dx + dy * dy, len = std::sqrt(len2);
  const double h = static_cast<double>(img.height), w = static_cast<double>(img.width);

  // Clamp in double before converting: points may be far outside the image.
  const double row_lo = std::max(0.0, std::ceil(std::min(ay, by) - r));
  const double row_hi = std::min(h - 1.0, std::floor(std::max(ay, by) + r));
  if (row_lo > row_hi) return;
  const int64_t cn = img.channels;
  for (int64_t y = static_cast<int64_t>(row_lo); y <= static_cast<int64_t>(row_hi); ++y) {
    const double yd = static_cast<double>(y);
    double lo = kInf, hi = -kInf;
    for (const auto& [cx, cy] : {std::pair{ax, ay}, std::pair{bx, by}}) {
      const double q = r * r - (yd - cy) * (yd - cy);
      if (q >= 0.0) {
        const double s = std::sqrt(q);
        lo = std::min(lo, cx - s), hi = std::max(hi, cx + s);
      }
    }
    if (len2 > 0.0) {
      const double py = yd - ay;  // px = x - ax is the unknown
      double plo = -kInf, phi = kInf;
      constrain(dx, -py * dy, len2 - py * dy, plo, phi);              // projection in [0, |D|^2]
      constrain(dy, py * dx - r * len, py * dx + r * len, plo, phi);  // distance to the line <= r
      if (plo <= phi) lo = std::min(lo, ax + plo), hi = std::max(hi, ax + phi);
    }
    const double col_lo = std::max(0.0, std::ceil(lo));
    const double col_hi = std::min(w - 1.0, std::floor(hi));
    if (!(col_lo <= col_hi)) continue;
    uint8_t* p = img.row(y) + static_cast<int64_t>(col_lo) * cn;
    for (int64_t x = static_cast<int64_t>(col_lo); x <= static_cast<int64_t>(col_hi); ++x) {
      for (int64_t c = 0; c < cn; ++c) *p++ = color[c];
    }
  }
}

Image draw_annotations_seed(const Image& img, const std::vector<Annotation>& annotations,
                            int64_t orig_h, int64_t orig_w, float thickness_orig) {
  check_image(img, "draw_annotations_seed");
  check_thickness(thickness_orig, "draw_annotations_seed");
  check_orig_size(orig_h, orig_w, "draw_annotations_seed");
  Image out = img;
  const double scale = (static_cast<double>(img.width) / static_cast<double>(orig_w) +
                        static_cast<double>(img.height) / static_cast<double>(orig_h)) /
                       2.0;
  const float thickness =
      static_cast<float>(std::max(1.0, static_cast<double>(thickness_orig) * scale));
  draw_polylines(out, annotations, orig_h, orig_w, thickness, AnnotationStyle::seed);
  return out;
}

namespace {
Image draw_coloured(const Image& img, const std::vector<Annotation>& annotations, int64_t orig_h,
                    int64_t orig_w, float thickness_work, AnnotationStyle style, const char* what) {
  check_image(img, what);
  check_thickness(thickness_work, what);
  check_orig_size(orig_h, orig_w, what);
  RZ_CHECK(img.channels == 1 || img.channels == 3, what, ": expected a gray or RGB image, got ", img.channels,
           " channels");
  Image out = img.channels == 1 ? gray_to_rgb(img) : img;
  draw_polylines(out, annotations, orig_h, orig_w, std::max(1.0f, thickness_work), style);
  return out;
}
}  // namespace

Image draw_annotations_color(const Image& img, const std::vector<Annotation>& annotations,
                             int64_t orig_h, int64_t orig_w, float thickness_work) {
  return draw_coloured(img, annotations, orig_h, orig_w, thickness_work, AnnotationStyle::color,
                       "draw_annotations_color");
}

Image draw_annotations_device(const Image& img, const std::vector<Annotation>& annotations,
                              int64_t orig_h, int64_t orig_w, float thickness_work) {
  return draw_coloured(img, annotations, orig_h, orig_w, thickness_work, AnnotationStyle::device,
                       "draw_annotations_device");
}

AnnotationStyle parse_annotation_style(const std::string& name) {
  const size_t n = kAnnotationStyleNames.size();
  for (size_t i = 0; i < n; ++i)
    if (name == kAnnotationStyleNames[i]) return static_cast<AnnotationStyle>(i);
  std::string expected;
  for (size_t i = 0; i < n; ++i)
    expected += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::string(kAnnotationStyleNames[i]);
  RZ_THROW("annotation style '", name, "' (expected ", expected, ")");
}

Image draw_annotations(const Image& img, const std::vector<Annotation>& annotations, int64_t orig_h,
                       int64_t orig_w, AnnotationStyle style, float thickness) {
  switch (style) {
    case AnnotationStyle::seed:
      return draw_annotations_seed(img, annotations, orig_h, orig_w, thickness);
    case AnnotationStyle::color:
      return draw_annotations_color(img, annotations, orig_h, orig_w, thickness);
    case AnnotationStyle::device:
      return draw_annotations_device(img, annotations, orig_h, orig_w, thickness);
  }
  RZ_THROW("draw_annotations: unknown style ", static_cast<int>(style));
}

}  // namespace rz::data
