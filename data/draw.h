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
//             kAnnotationPalette; the thickness is in WORKING pixels;
//   * device - as color, but one colour per device (kDevicePalette: ETT, NGT,
//             CVC, Swan-Ganz), whatever its status: the lines say where each
//             device runs and where its tip is, and leave normal / borderline /
//             abnormal to be read from the tip's position against the anatomy,
//             as a radiologist reads it. A teacher of this style learns
//             localization features a student can predict from the plain image.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/ranzcr_csv.h"

namespace rz::data {

enum class AnnotationStyle { seed, color, device };

// The styles' names in enum order: parse_annotation_style and the check of
// stage.annotation_style (train/config.cpp) both read this one list.
inline constexpr std::array<const char*, 3> kAnnotationStyleNames = {"seed", "color", "device"};

// One of kAnnotationStyleNames; anything else throws rz::Error naming the value.
AnnotationStyle parse_annotation_style(const std::string& name);

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

// One RGB colour per device, for the device style: ETT red, NGT green, CVC blue,
// Swan-Ganz yellow.
inline constexpr std::array<std::array<uint8_t, 3>, 4> kDevicePalette = {{
    {255, 0, 0}, {0, 255, 0}, {0, 96, 255}, {255, 255, 0}}};
// The device (kDevicePalette index) of a label: 0-2 ETT, 3-6 NGT, 7-9 CVC, 10 Swan-Ganz.
inline constexpr int device_of_label(int label) { return label < 3 ? 0 : label < 7 ? 1 : label < 10 ? 2 : 3; }

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

// Device style: as the colour style, with kDevicePalette[device_of_label(label)].
Image draw_annotations_device(const Image& img, const std::vector<Annotation>& annotations,
                              int64_t orig_h, int64_t orig_w,
                              float thickness_work = kColorThicknessWork);

// Any style; `thickness` is in original pixels for seed and working
// pixels for color and device (see above).
Image draw_annotations(const Image& img, const std::vector<Annotation>& annotations, int64_t orig_h,
                       int64_t orig_w, AnnotationStyle style, float thickness);

// The rasterizer: paints the capsule of radius thickness / 2 around the
// segment (x0, y0)-(x1, y1) (working pixel coordinates) with `color`
// (img.channels values) into img. Clipped to the image; non-finite
// coordinates throw rz::Error.
void draw_thick_segment(Image& img, float x0, float y0, float x1, float y1, float thickness,
                        const uint8_t* color);

}  // namespace rz::data
