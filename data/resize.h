// Image resizing with OpenCV's cv2.resize semantics (uint8 and float, 1..4
// channels, HWC). The uint8 versions match OpenCV's fixture outputs within
// one grey level (see tests/data/test_image.cpp for the measured bounds).
#pragma once

#include <cstdint>

#include "data/image.h"

namespace rz::data {

// cv2.resize(src, (out_w, out_h), interpolation=cv2.INTER_AREA):
//   * integer shrink factors (src = k * out in each dimension): box average of
//     each k_y x k_x block (2x2 in uint8 rounds half up, other factors
//     multiply the integer sum by 1/area in float and round half to even);
//   * fractional shrink factors: exact area coverage, i.e. each output pixel is
//     the average of the source pixels under its footprint, partially covered
//     pixels weighted by their covered fraction (OpenCV's float weight tables);
//   * enlarging in either dimension: OpenCV falls back to a bilinear variant
//     whose weights come from the pixel footprints (sharper than INTER_LINEAR);
//     that fallback is implemented too, so any output size is accepted.
Image resize_area(const Image& src, int64_t out_h, int64_t out_w);
ImageF resize_area(const ImageF& src, int64_t out_h, int64_t out_w);

// cv2.resize(..., interpolation=cv2.INTER_LINEAR): bilinear with half-pixel
// centres (sx = (dx + 0.5) * in/out - 0.5), edge pixels replicated. uint8 uses
// OpenCV's 11-bit fixed-point weights; a shrink by exactly 2x2 is INTER_AREA,
// as in OpenCV. The float version uses float weights.
Image resize_bilinear(const Image& src, int64_t out_h, int64_t out_w);
ImageF resize_bilinear(const ImageF& src, int64_t out_h, int64_t out_w);

}  // namespace rz::data
