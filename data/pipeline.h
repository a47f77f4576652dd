// The one sample pipeline. Training, validation, `ranzcr eval` and
// `ranzcr predict` all turn an X-ray into model input through these
// functions, so a model is never fed at test time anything but what it was
// validated on:
//
//   original file --decode (gray)--> CLAHE at full resolution --area resize-->
//     S x S uint8  (PrepSpec: what `ranzcr prep` stores in the cache; inference
//                   repeats it on the original file)
//   --> [annotations drawn, for a teacher's input]
//   --> augment: train = random crop/flip/rotate/..., eval = central crop of
//       eval_crop_fraction resized to the input size (InputSpec.aug)
//   --> ImageNet normalization, gray replicated to `channels` (normalize_into)
//   --> [student-only perturbations: Gaussian noise, pixel dropout (training)]
//
// A validation sample read from the cache and the same study's original file
// read by make_file_transform give bit-identical floats (tests/data/test_pipeline.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/draw.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/ranzcr_csv.h"

namespace rz::data {

class ImageCache;
struct CacheInfo;
struct PrepOptions;

// What `ranzcr prep` does to an original image before caching it.
struct PrepSpec {
  int64_t size = 512;  // S: the cached image is S x S gray
  bool clahe = true;
  double clahe_clip = 2.0;  // cv2.createCLAHE clipLimit (<= 0: no clipping)
  int clahe_tiles_x = 8;
  int clahe_tiles_y = 8;

  // Equal when they produce the same pixels: clip and tiles count only with CLAHE on.
  bool operator==(const PrepSpec& o) const;
  // "512 px, CLAHE clip 2 tiles 8x8" / "512 px, no CLAHE": for messages.
  std::string str() const;
};

// Throws rz::Error naming the field: size in [32, 4096], finite clip, tiles in [1, 256].
void check_prep_spec(const PrepSpec& spec, const std::string& where);

// The spec a cache was built with (its index's "image_size" and "clahe"), and
// the spec prep builds from its options.
PrepSpec prep_spec_of(const CacheInfo& info);
PrepSpec prep_spec_of(const PrepOptions& options);

// A decoded gray original -> CLAHE at full resolution (when enabled) -> area
// resize to size x size. What prep caches, and what inference recomputes.
Image preprocess(Image gray, const PrepSpec& spec);

// decode_image(path, 1) (pixel budget, clear errors naming the file) then
// preprocess. *orig_h / *orig_w (optional) receive the original size.
Image load_preprocessed(const std::string& path, const PrepSpec& spec, int64_t* orig_h = nullptr,
                        int64_t* orig_w = nullptr);

// What the model reads: the augmentation (train or eval mode; out_size is the
// input size), the channel count, and the student's extra perturbations
// (applied only when aug.train).
struct InputSpec {
  AugmentConfig aug;
  int64_t channels = 3;  // 1 or 3
  double input_noise = 0.0;    // Gaussian std added to the normalized input
  double input_dropout = 0.0;  // share of pixels zeroed (every channel)
};

// The eval-mode twin of `spec`: same size, crop fraction and channels, no
// randomness, no perturbations.
InputSpec eval_input(const InputSpec& spec);

// THE normalization: a uint8 image (1 or 3 channels) as floats with
// `channels` channels (1 or 3), HWC: (v / 255 - kImageNetMean[c]) /
// kImageNetStd[c], evaluated through normalize()'s table, so the values are
// bit-identical to normalize(gray_to_rgb(img)) for a gray image. A 3-channel
// image read as one channel uses its first channel.
void normalize_into(const Image& img, int64_t channels, float* out);

// Augment (params drawn by the caller) + normalize + perturbations, for one
// preprocessed image. `rng` feeds the perturbations only.
void to_model_input(const Image& preprocessed, const AugmentParams& params, const InputSpec& spec,
                    Generator& rng, bool perturb, float* out);

// The training/validation transform over a prep cache. Sample index = study
// index in `annotations`' train set; cache_row[study] is its cache row.
// Plain input for students; annotated for teachers (plain_is_annotated); a
// paired call (out_annotated) also gets the annotated twin under the same
// augmentation, without the student's perturbations. The referenced objects
// must outlive the transform.
struct CacheSamples {
  const ImageCache* cache = nullptr;
  const std::vector<int64_t>* cache_row = nullptr;  // per study
  const RanzcrAnnotations* annotations = nullptr;    // by_study may be empty
  AnnotationStyle style = AnnotationStyle::seed;
  float thickness = 2.0f;
};
SampleTransform make_sample_transform(const CacheSamples& samples, const InputSpec& spec,
                                      bool plain_is_annotated);

// Inference: sample i = files[i] -> load_preprocessed(prep) -> the eval
// transform of `spec` -> normalize. No generator draws.
SampleTransform make_file_transform(std::vector<std::string> files, const PrepSpec& prep,
                                    const InputSpec& spec);

}  // namespace rz::data
