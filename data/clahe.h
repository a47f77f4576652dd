// Histogram equalization and CLAHE on 8-bit gray images, with OpenCV's exact
// semantics (checked bit for bit against cv2 fixtures in tests/data/test_image.cpp).
#pragma once

#include "data/image.h"

namespace rz::data {

// cv2.equalizeHist: LUT[v] = round(cdf(v) * 255 / (N - count(min value))), the
// smallest present value mapping to 0; a constant image stays unchanged.
Image equalize_hist(const Image& gray);

// cv2.createCLAHE(clip_limit, (tiles_x, tiles_y)).apply(gray) for 8-bit gray:
//   * the image is cut into tiles_x x tiles_y tiles; when either dimension is
//     not divisible, BOTH are padded (bottom/right, BORDER_REFLECT_101) by
//     tiles - (size % tiles) -- a full extra tile width on a divisible side,
//     as OpenCV does -- and only the histograms see the padding;
//   * per tile: histogram, clipped at max(int(clip_limit * tile_area / 256), 1)
//     (clip_limit <= 0 disables clipping), the excess spread evenly plus the
//     remainder one count every 256/remainder bins, cumulative sum scaled by
//     255 / tile_area into a LUT;
//   * each pixel blends the LUTs of the 4 nearest tile centres bilinearly.
// Requires 1 channel and tiles_x, tiles_y >= 1.
Image clahe(const Image& gray, double clip_limit = 2.0, int tiles_x = 8, int tiles_y = 8);

}  // namespace rz::data
