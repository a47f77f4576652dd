#include "data/pipeline.h"

#include <array>
#include <cmath>
#include <cstdio>

#include "data/cache.h"
#include "data/clahe.h"
#include "data/resize.h"
#include "engine/error.h"

namespace rz::data {

bool PrepSpec::operator==(const PrepSpec& o) const {
  if (size != o.size || clahe != o.clahe) return false;
  return !clahe || (clahe_clip == o.clahe_clip && clahe_tiles_x == o.clahe_tiles_x &&
                    clahe_tiles_y == o.clahe_tiles_y);
}

std::string PrepSpec::str() const {
  char buf[128];
  if (clahe)
    std::snprintf(buf, sizeof buf, "%lld px, CLAHE clip %g tiles %dx%d", static_cast<long long>(size),
                  clahe_clip, clahe_tiles_x, clahe_tiles_y);
  else
    std::snprintf(buf, sizeof buf, "%lld px, no CLAHE", static_cast<long long>(size));
  return buf;
}

void check_prep_spec(const PrepSpec& s, const std::string& where) {
  RZ_CHECK(s.size >= 32 && s.size <= 4096, where, ": the prep size must be in [32, 4096], got ", s.size);
  if (!s.clahe) return;
  RZ_CHECK(std::isfinite(s.clahe_clip), where, ": the CLAHE clip limit must be finite, got ", s.clahe_clip);
  RZ_CHECK(s.clahe_tiles_x >= 1 && s.clahe_tiles_y >= 1 && s.clahe_tiles_x <= 256 && s.clahe_tiles_y <= 256,
           where, ": CLAHE tiles must be in [1, 256], got ", s.clahe_tiles_x, "x", s.clahe_tiles_y);
}

PrepSpec prep_spec_of(const CacheInfo& info) {
  return {.size = info.image_size, .clahe = info.clahe, .clahe_clip = info.clahe_clip,
          .clahe_tiles_x = info.clahe_tiles_x, .clahe_tiles_y = info.clahe_tiles_y};
}

PrepSpec prep_spec_of(const PrepOptions& o) {
  return {.size = o.image_size, .clahe = o.clahe, .clahe_clip = o.clahe_clip,
          .clahe_tiles_x = o.clahe_tiles_x, .clahe_tiles_y = o.clahe_tiles_y};
}

Image preprocess(Image gray, const PrepSpec& spec) {
  RZ_CHECK(gray.channels == 1, "preprocess: expects a gray image, got ", gray.channels, " channels");
  if (spec.clahe) gray = clahe(gray, spec.clahe_clip, spec.clahe_tiles_x, spec.clahe_tiles_y);
  return resize_area(gray, spec.size, spec.size);
}

Image load_preprocessed(const std::string& path, const PrepSpec& spec, int64_t* orig_h, int64_t* orig_w) {
  Image img = decode_image(path, 1);
  if (orig_h) *orig_h = img.height;
  if (orig_w) *orig_w = img.width;
  return preprocess(std::move(img), spec);
}

InputSpec eval_input(const InputSpec& spec) {
  InputSpec e = spec;
  e.aug.train = false;
  e.input_noise = 0;
  e.input_dropout = 0;
  return e;
}

namespace {

// normalize()'s values for every gray level and channel: the formula has one home.
const std::array<std::array<float, 256>, 3>& imagenet_table() {
  static const auto table = [] {
    Image ramp(1, 256, 3);
    for (int v = 0; v < 256; ++v)
      for (int c = 0; c < 3; ++c) ramp.at(0, v, c) = static_cast<uint8_t>(v);
    const ImageF norm = normalize(ramp);
    std::array<std::array<float, 256>, 3> t{};
    for (int v = 0; v < 256; ++v)
      for (int c = 0; c < 3; ++c) t[static_cast<size_t>(c)][static_cast<size_t>(v)] = norm.at(0, v, c);
    return t;
  }();
  return table;
}

void check_spec(const InputSpec& spec) {
  RZ_CHECK(spec.channels == 1 || spec.channels == 3, "sample pipeline: channels must be 1 or 3, got ",
           spec.channels);
  RZ_CHECK(spec.input_noise >= 0 && spec.input_dropout >= 0 && spec.input_dropout <= 1,
           "sample pipeline: input_noise must be >= 0 and input_dropout in [0, 1], got ",
           spec.input_noise, " and ", spec.input_dropout);
  check_augment_config(spec.aug);
}

}  // namespace

void normalize_into(const Image& img, int64_t channels, float* out) {
  RZ_CHECK(img.channels == 1 || img.channels == 3, "normalize_into: expects 1 or 3 channels, got ",
           img.channels);
  RZ_CHECK(channels == 1 || channels == 3, "normalize_into: channels must be 1 or 3, got ", channels);
  const auto& t = imagenet_table();
  const int64_t hw = img.height * img.width;
  const uint8_t* s = img.pixels.data();
  const int64_t step = img.channels;
  for (int64_t p = 0; p < hw; ++p, s += step, out += channels)
    for (int64_t c = 0; c < channels; ++c)
      out[c] = t[static_cast<size_t>(c)][s[img.channels == 1 ? 0 : c]];
}

void to_model_input(const Image& preprocessed, const AugmentParams& params, const InputSpec& spec,
                    Generator& rng, bool perturb, float* out) {
  normalize_into(apply_augment(preprocessed, params, spec.aug), spec.channels, out);
  if (!perturb || !spec.aug.train) return;
  const int64_t n = spec.aug.out_size * spec.aug.out_size * spec.channels;
  if (spec.input_noise > 0)
    for (int64_t i = 0; i < n; ++i) out[i] += static_cast<float>(rng.normal(0.0, spec.input_noise));
  if (spec.input_dropout > 0)
    for (int64_t p = 0; p < n / spec.channels; ++p)
      if (rng.uniform() < spec.input_dropout)
        for (int64_t c = 0; c < spec.channels; ++c) out[p * spec.channels + c] = 0.0f;
}

SampleTransform make_sample_transform(const CacheSamples& s, const InputSpec& spec, bool plain_is_annotated) {
  RZ_CHECK(s.cache && s.cache_row && s.annotations, "make_sample_transform: cache, rows and annotations are required");
  check_spec(spec);
  return [s, spec, plain_is_annotated](int64_t study, Generator& rng, float* out_plain, float* out_annotated) {
    const auto si = static_cast<size_t>(study);
    RZ_CHECK(si < s.cache_row->size(), "sample pipeline: study ", study, " is out of range");
    const int64_t row = (*s.cache_row)[si];
    RZ_CHECK(row >= 0, "sample pipeline: study ", study, " is not in the cache");
    const Image cached = s.cache->load(row);
    const CacheEntry& entry = s.cache->entry(row);
    auto annotated = [&] {
      static const std::vector<Annotation> none;
      const auto& by_study = s.annotations->by_study;
      const auto& anns = by_study.empty() ? none : by_study[si];
      return draw_annotations(cached, anns, entry.orig_h, entry.orig_w, s.style, s.thickness);
    };
    const AugmentParams params = sample_augment(spec.aug, cached.height, cached.width, rng);
    // The student's perturbations go to its plain input only: the teacher sees the clean twin.
    if (plain_is_annotated)
      to_model_input(annotated(), params, spec, rng, false, out_plain);
    else
      to_model_input(cached, params, spec, rng, true, out_plain);
    if (out_annotated) to_model_input(annotated(), params, spec, rng, false, out_annotated);
  };
}

SampleTransform make_file_transform(std::vector<std::string> files, const PrepSpec& prep,
                                    const InputSpec& spec_in) {
  check_prep_spec(prep, "sample pipeline");
  const InputSpec spec = eval_input(spec_in);
  check_spec(spec);
  return [files = std::move(files), prep, spec](int64_t i, Generator& rng, float* out_plain,
                                                float* out_annotated) {
    RZ_CHECK(i >= 0 && static_cast<size_t>(i) < files.size(), "sample pipeline: file ", i, " is out of range");
    const Image img = load_preprocessed(files[static_cast<size_t>(i)], prep);
    const AugmentParams params = sample_augment(spec.aug, img.height, img.width, rng);
    to_model_input(img, params, spec, rng, false, out_plain);
    if (out_annotated)
      std::copy(out_plain, out_plain + spec.aug.out_size * spec.aug.out_size * spec.channels, out_annotated);
  };
}

}  // namespace rz::data
