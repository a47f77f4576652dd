// Drawing RANZCR line annotations onto X-rays (the teacher's input).
//
// Annotation points are [x, y] in ORIGINAL image pixels; the image being
// drawn on is at a working resolution, so every point is scaled by
// sx = work_w / orig_w, sy = work_h / orig_h (x_work = x * sx, as when the
// public pipelines scale their points). Each annotation is a polyline through
// its points (a single point draws a dot); annotations are drawn in list
// order, later ones over earlier ones.
//
// Rasterization: a solid line of thickness t with round caps paints every
// pixel whose centre (integer coordinates, the Image indexing) lies within
// t / 2 of the segment (a "capsule"). It is computed per row as the exact
// x-interval of the capsule, so the cost is proportional to the painted area,
// points far outside the image are harmless (rows and columns are clipped
// before any pixel is touched), and a polyline's joints are round. No
// anti-aliasing. Thickness below 1 is raised to 1 so a line never vanishes.
//
// Styles:
//   * seed  - the public RANZCR teacher pipeline (cv2.line in black between
//             consecutive points, thickness 2 on the original image): value 0
//             in every channel; the thickness is in ORIGINAL pixels and is
//             scaled by (sx + sy) / 2 (at least 1 working pixel);
//   * color - a 3-channel output (a gray input is replicated, an RGB input
//             copied) with each label in its own colour from
//             kAnnotationPalette; the thickness is in WORKING pixels.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "data/image.h"
#include "data/ranzcr_csv.h"

namespace rz::data {

enum class AnnotationStyle { seed, color };

// One RGB colour per label, in kRanzcrLabels order, far apart in hue and
// away from gray so lines never look like anatomy: ETT red/orange/yellow,
// NGT magenta/violet/pink/green, CVC blue/cyan/azure, Swan-Ganz lime.
inline constexpr std::array<std::array<uint8_t, 3>, kNumRanzcrLabels> kAnnotationPalette = {{
    {255, 0, 0},      // ETT - Abnormal: red
    {255, 128, 0},    // ETT - Borderline: orange
    {255, 255, 0},    // ETT - Normal: yellow
    {255, 0, 255},    // NGT - Abnormal: magenta
    {128, 0, 255},    // NGT - Borderline: violet
    {255, 128, 192},  // NGT - Incompletely Imaged: pink
    {0, 255, 0},      // NGT - Normal: green
    {0, 0, 255},      // CVC - Abnormal: blue
    {0, 255, 255},    // CVC - Borderline: cyan
    {0, 128, 255},    // CVC - Normal: azure
    {160, 255, 96},   // Swan Ganz Catheter Present: lime
}};

inline constexpr float kSeedThicknessOrig = 2.0f;  // the public teacher pipeline's cv2.line
inline constexpr float kColorThicknessWork = 3.0f;

// Seed style on a copy of `img` (any channel count): black lines of
// thickness_orig original pixels.
Image draw_annotations_seed(const Image& img, const std::vector<Annotation>& annotations,
                            int64_t orig_h, int64_t orig_w,
                            float thickness_orig = kSeedThicknessOrig);

// Colour style: `img` is gray (replicated) or RGB (copied); lines of
// thickness_work working pixels in kAnnotationPalette[label].
Image draw_annotations_color(const Image& img, const std::vector<Annotation>& annotations,
                             int64_t orig_h, int64_t orig_w,
                             float thickness_work = kColorThicknessWork);

// Either style; `thickness` is in original pixels for seed and working
// pixels for color (see above).
Image draw_annotations(const Image& img, const std::vector<Annotation>& annotations, int64_t orig_h,
                       int64_t orig_w, AnnotationStyle style, float thickness);

// The rasterizer: paints the capsule of radius thickness / 2 around the
// segment (x0, y0)-(x1, y1) (working pixel coordinates) with `color`
// (img.channels values) into img. Clipped to the image; non-finite
// coordinates throw rz::Error.
void draw_thick_segment(Image& img, float x0, float y0, float x1, float y1, float thickness,
                        const uint8_t* color);

}  // namespace rz::data
