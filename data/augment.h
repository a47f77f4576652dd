// Training augmentations for the RANZCR images, seeded and reproducible, split
// into two steps so that a teacher (annotated X-ray) and a student (plain
// X-ray) can see exactly the same geometry:
//
//   AugmentParams p = sample_augment(cfg, src.height, src.width, gen);  // every random draw
//   Image student = apply_augment(plain, p, cfg);                        // deterministic
//   Image teacher = apply_augment(annotated, p, cfg);                    // same p: same crop,
//                                                                        // angle, flip, holes
// apply_augment is a pure function of (image, params, config): the two
// outputs are identical wherever the annotation did not change the source
// pixels that feed them (each output pixel reads a 2x2 neighbourhood, or the
// footprint of the area prefilter, of the source).
//
// Pipeline (albumentations/torchvision semantics, in this order):
//   1. random resized crop (torchvision RandomResizedCrop.get_params: 10
//      attempts at area in crop_scale x source area and log-uniform aspect
//      ratio in crop_ratio, w = round(sqrt(area * ratio)), h = round(sqrt(area /
//      ratio)), top-left uniform; then a central crop with the ratio clamped),
//      resized to out_size x out_size (the aspect ratio is not kept, as in
//      torchvision);
//   2. horizontal flip;
//   3. rotation about the output centre by an angle uniform in rotate_deg
//      (positive = counter-clockwise on screen, cv2.getRotationMatrix2D's
//      convention), border pixels per border_mode;
//   4. brightness/contrast (albumentations RandomBrightnessContrast with
//      brightness_by_max: out = trunc(clip(in * (1 + contrast) + brightness *
//      255, 0, 255)), float32 LUT as albumentations builds it);
//   5. coarse dropout (albumentations CoarseDropout): holes in output
//      coordinates filled with hole_fill in every channel.
//
// Geometry 1-3 is composed into ONE affine map from output pixel to source
// pixel (pixel centres at integer coordinates, the half-pixel convention of
// cv2.resize: src = (dst + 0.5) * crop / out - 0.5 + crop_origin), and the
// source is sampled once with bilinear interpolation (11-bit fixed-point
// weights, like OpenCV's warpAffine/resize, rounded to nearest). Resampling
// twice (crop-resize, then rotate) would blur twice; one warp blurs once.
//
// Anti-aliasing: bilinear alone aliases when the map shrinks: at a shrink
// factor f a 1-pixel line keeps between 1 and 1 - f/2 of its contrast
// depending on where it falls between samples, so at f >= 2 thin tubes can
// vanish. When the shrink factor along a source axis exceeds
// prefilter_above (default 1.25), the source region the output reads is
// first reduced with resize_area (exact pixel-footprint averaging, OpenCV
// INTER_AREA) to the output's scale, and the warp then runs at a factor of
// about 1. Caches stored near the training size (the usual setup) never take
// this path; full-size 2000-3000 px sources do.
//
// Brightness/contrast is applied to the interpolation taps (a 256-entry LUT
// lookup per tap), i.e. as if the source had been adjusted before the warp
// (albumentations applies it before its rotation), so constant-border pixels
// keep border_value and holes keep hole_fill.
//
// Eval mode (train = false): no randomness and no generator draws; a central
// crop of eval_crop_fraction of each side (1 = the whole image) resized to
// out_size x out_size with the same resampler.
//
// Works for uint8 images with 1..4 channels (1 and 3 have unrolled inner
// loops). Invalid configurations and params that do not fit the image throw
// rz::Error.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "data/image.h"
#include "engine/generator.h"

namespace rz::data {

// How pixels outside the source are read (cv2 BORDER_CONSTANT,
// BORDER_REPLICATE, BORDER_REFLECT_101: ...dcb|abcd|cba...). For constant,
// the image is taken to cover its pixel squares, [-0.5, n - 0.5]: a sample
// inside that extent reads only image pixels (the edge pixel is repeated over
// the outer half pixel, as in cv2.resize), so a crop-resize without rotation
// never blends the border value into the edge pixels; beyond it, the missing
// taps read border_value.
enum class BorderMode { constant, replicate, reflect101 };

struct AugmentConfig {
  int64_t out_size = 512;           // output is out_size x out_size
  bool train = true;                // false: eval mode (deterministic resize, see above)
  double eval_crop_fraction = 1.0;  // eval: central crop of this fraction of each side

  // Random resized crop (torchvision semantics).
  std::array<double, 2> crop_scale = {0.85, 1.0};             // of the source area
  std::array<double, 2> crop_ratio = {3.0 / 4.0, 4.0 / 3.0};  // w / h, log-uniform

  double hflip_prob = 0.5;

  // Rotation about the output centre.
  double rotate_prob = 0.5;
  std::array<double, 2> rotate_deg = {-10.0, 10.0};  // uniform
  BorderMode border_mode = BorderMode::constant;
  uint8_t border_value = 0;  // for BorderMode::constant

  // Brightness/contrast: contrast uniform in contrast_range (alpha = 1 +
  // contrast), brightness uniform in brightness_range (beta, times 255).
  double brightness_contrast_prob = 0.5;
  std::array<double, 2> brightness_range = {-0.2, 0.2};
  std::array<double, 2> contrast_range = {-0.2, 0.2};

  // Coarse dropout: holes uniform in [min_holes, max_holes]; each hole's
  // height and width are int(out_size * uniform(range)) (at least 1 pixel),
  // its top-left uniform so that it lies inside the output.
  double dropout_prob = 0.5;
  int64_t min_holes = 1;
  int64_t max_holes = 8;
  std::array<double, 2> hole_height_frac = {0.05, 0.1};  // of out_size
  std::array<double, 2> hole_width_frac = {0.05, 0.1};
  uint8_t hole_fill = 0;

  // Area prefilter when the map shrinks a source axis by more than this.
  double prefilter_above = 1.25;
};

// Throws rz::Error naming the first invalid field.
void check_augment_config(const AugmentConfig& cfg);

struct DropoutHole {
  int64_t y = 0, x = 0, h = 0, w = 0;  // output pixels [y, y + h) x [x, x + w)
  bool operator==(const DropoutHole&) const = default;
};

// Every random choice of one augmentation (plain data: may be logged, stored
// or built by hand).
struct AugmentParams {
  int64_t src_h = 0, src_w = 0;  // the source shape it was drawn for
  // Crop box in source pixels: rows [crop_y, crop_y + crop_h), columns
  // [crop_x, crop_x + crop_w); it must lie inside the source.
  int64_t crop_y = 0, crop_x = 0, crop_h = 0, crop_w = 0;
  bool hflip = false;
  double angle_deg = 0.0;   // counter-clockwise on screen
  double contrast = 0.0;    // alpha = 1 + contrast
  double brightness = 0.0;  // beta; + brightness * 255
  std::vector<DropoutHole> holes;
  bool operator==(const AugmentParams&) const = default;
};

// Params that change nothing: the whole source, no flip, angle 0, no
// brightness/contrast change, no holes (resizes to out_size if the source
// is not out_size x out_size).
AugmentParams identity_params(int64_t src_h, int64_t src_w);

// Draws every random choice, in this order: crop (torchvision's loop), flip,
// rotation (probability, angle), brightness/contrast (probability, contrast,
// brightness), dropout (probability, count, then per hole height, width, y,
// x). Eval mode draws nothing.
AugmentParams sample_augment(const AugmentConfig& cfg, int64_t src_h, int64_t src_w,
                             Generator& gen);

// Applies params to src (src.height x src.width must equal params.src_h x
// params.src_w); returns out_size x out_size x src.channels.
Image apply_augment(const Image& src, const AugmentParams& params, const AugmentConfig& cfg);

// x_src = xx * u + xy * v + x0, y_src = yx * u + yy * v + y0.
struct AffineMap {
  double xx = 1, xy = 0, x0 = 0;
  double yx = 0, yy = 1, y0 = 0;
};

// The composed geometry: output pixel (u, v) -> source pixel (x, y).
AffineMap output_to_source(const AugmentParams& params, const AugmentConfig& cfg);
// Its inverse: source pixel -> output pixel.
AffineMap source_to_output(const AugmentParams& params, const AugmentConfig& cfg);

// Maps [x, y] points given in the source's pixel coordinates (the image the
// params were drawn for; scale RANZCR's original coordinates by
// src_w / orig_w, src_h / orig_h first) to output pixel coordinates. Points
// may land outside [0, out_size); nothing is clipped.
std::vector<std::array<float, 2>> map_points(const std::vector<std::array<float, 2>>& points,
                                             const AugmentParams& params, const AugmentConfig& cfg);

}  // namespace rz::data
