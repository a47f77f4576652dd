// The one sample pipeline (data/pipeline.h): what prep caches equals what
// inference recomputes from the original file, and a validation sample read
// from the cache equals the same study read from its file, bit for bit, for
// several preprocessing and input settings.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "data/cache.h"
#include "data/image.h"
#include "data/pipeline.h"
#include "data/ranzcr_csv.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"

namespace fs = std::filesystem;
using rz::Generator;
using rz::data::Image;
using rz::data::ImageCache;
using rz::data::InputSpec;
using rz::data::PrepSpec;
using rz::test::contains;
using rz::test::error_message;
using rz::test::TempDir;

namespace {

struct SynthSet {
  TempDir dir{"pipeline"};
  std::string data_dir;
  SynthSet() {
    rz::data::SynthOptions so;
    so.out_dir = data_dir = (dir.path() / "data").string();
    so.n = 10;
    so.n_test = 0;
    so.size = 72;
    so.seed = 3;
    so.threads = 1;
    rz::data::run_synth(so);
  }
  std::string prep(const PrepSpec& s, const std::string& name) const {
    rz::data::PrepOptions po;
    po.data_dir = data_dir;
    po.out_dir = (dir.path() / name).string();
    po.image_size = s.size;
    po.clahe = s.clahe;
    po.clahe_clip = s.clahe_clip;
    po.clahe_tiles_x = s.clahe_tiles_x;
    po.clahe_tiles_y = s.clahe_tiles_y;
    po.threads = 1;
    rz::data::run_prep(po, {}, [](const std::string&) {});
    return po.out_dir;
  }
  std::string image(const std::string& uid) const { return (fs::path(data_dir) / "train" / (uid + ".jpg")).string(); }
};

InputSpec eval_spec(int64_t size, int64_t channels, double crop) {
  InputSpec s;
  s.aug.out_size = size;
  s.aug.train = false;
  s.aug.eval_crop_fraction = crop;
  s.channels = channels;
  return s;
}

}  // namespace

TEST_CASE("pipeline: normalize_into is normalize() with gray replicated, one formula") {
  Image g(3, 5, 1);
  for (int64_t i = 0; i < 15; ++i) g.pixels[static_cast<size_t>(i)] = static_cast<uint8_t>(i * 17);
  const rz::data::ImageF want3 = rz::data::normalize(rz::data::gray_to_rgb(g));
  std::vector<float> got(45);
  rz::data::normalize_into(g, 3, got.data());
  CHECK(std::memcmp(got.data(), want3.pixels.data(), got.size() * sizeof(float)) == 0);
  const rz::data::ImageF want1 = rz::data::normalize(g);
  rz::data::normalize_into(g, 1, got.data());
  CHECK(std::memcmp(got.data(), want1.pixels.data(), 15 * sizeof(float)) == 0);
  // The value is the formula: (v / 255 - mean) / std, in float.
  CHECK(got[1] == (17.0f / 255.0f - rz::data::kImageNetMean[0]) / rz::data::kImageNetStd[0]);
  // An RGB image read as one channel uses its first channel.
  Image rgb(1, 2, 3);
  rgb.pixels = {10, 200, 30, 40, 50, 60};
  rz::data::normalize_into(rgb, 1, got.data());
  CHECK(got[0] == (10.0f / 255.0f - rz::data::kImageNetMean[0]) / rz::data::kImageNetStd[0]);
  CHECK(got[1] == (40.0f / 255.0f - rz::data::kImageNetMean[0]) / rz::data::kImageNetStd[0]);
  CHECK(contains(error_message([&] { rz::data::normalize_into(g, 2, got.data()); }), "channels must be 1 or 3"));
}

TEST_CASE("pipeline: PrepSpec equality, description and checks") {
  PrepSpec a{.size = 64, .clahe = false, .clahe_clip = 2.0};
  PrepSpec b{.size = 64, .clahe = false, .clahe_clip = 4.0};
  CHECK(a == b);  // without CLAHE its settings change nothing
  a.clahe = b.clahe = true;
  CHECK_FALSE(a == b);
  CHECK(a.str() == "64 px, CLAHE clip 2 tiles 8x8");
  b.clahe = false;
  CHECK(b.str() == "64 px, no CLAHE");
  CHECK(contains(error_message([] { rz::data::check_prep_spec({.size = 16}, "here"); }), "here: the prep size"));
  CHECK(contains(error_message([] {
                   rz::data::check_prep_spec({.size = 64, .clahe = true, .clahe_tiles_x = 0}, "x");
                 }),
                 "CLAHE tiles must be in [1, 256]"));
}

TEST_CASE("pipeline: a validation sample from the cache equals the same study from its file") {
  const SynthSet set;
  const rz::RanzcrTrainSet train = rz::read_ranzcr_train((fs::path(set.data_dir) / "train.csv").string());
  const rz::RanzcrAnnotations anns =
      rz::read_ranzcr_annotations((fs::path(set.data_dir) / "train_annotations.csv").string(), train);
  struct Setting {
    PrepSpec prep;
    int64_t size, channels;
    double crop;
  };
  const std::vector<Setting> settings = {
      {{.size = 48, .clahe = true, .clahe_clip = 2.0, .clahe_tiles_x = 8, .clahe_tiles_y = 8}, 32, 3, 1.0},
      {{.size = 40, .clahe = true, .clahe_clip = 4.0, .clahe_tiles_x = 4, .clahe_tiles_y = 3}, 36, 1, 0.875},
      {{.size = 32, .clahe = false}, 48, 3, 0.9},  // enlarged: bilinear, not area
  };
  for (size_t k = 0; k < settings.size(); ++k) {
    const Setting& st = settings[k];
    CAPTURE(k);
    const std::string cache_dir = set.prep(st.prep, "cache" + std::to_string(k));
    const ImageCache cache = ImageCache::open(cache_dir, "train");
    CHECK(rz::data::prep_spec_of(cache.info()) == st.prep);
    std::vector<int64_t> rows;
    std::vector<std::string> files;
    for (const auto& s : train.studies) {
      rows.push_back(cache.find(s.uid));
      files.push_back(set.image(s.uid));
    }
    const InputSpec spec = eval_spec(st.size, st.channels, st.crop);
    const auto from_cache = rz::data::make_sample_transform(
        {.cache = &cache, .cache_row = &rows, .annotations = &anns}, spec, false);
    const auto from_file = rz::data::make_file_transform(files, st.prep, spec);
    const size_t numel = static_cast<size_t>(st.size * st.size * st.channels);
    std::vector<float> a(numel), b(numel);
    for (size_t i = 0; i < train.studies.size(); ++i) {
      CAPTURE(i);
      REQUIRE(rows[i] >= 0);
      // What prep cached is what inference recomputes.
      const Image pre = rz::data::load_preprocessed(files[i], st.prep);
      CHECK(std::memcmp(pre.pixels.data(), cache.image(rows[i]).data(), pre.pixels.size()) == 0);
      Generator g1(7), g2(99);
      from_cache(static_cast<int64_t>(i), g1, a.data(), nullptr);
      from_file(static_cast<int64_t>(i), g2, b.data(), nullptr);
      CHECK(std::memcmp(a.data(), b.data(), numel * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("pipeline: training samples are reproducible and only the student's input is perturbed") {
  const SynthSet set;
  const rz::RanzcrTrainSet train = rz::read_ranzcr_train((fs::path(set.data_dir) / "train.csv").string());
  const rz::RanzcrAnnotations anns =
      rz::read_ranzcr_annotations((fs::path(set.data_dir) / "train_annotations.csv").string(), train);
  const std::string cache_dir = set.prep({.size = 48}, "cache");
  const ImageCache cache = ImageCache::open(cache_dir, "train");
  std::vector<int64_t> rows;
  for (const auto& s : train.studies) rows.push_back(cache.find(s.uid));
  InputSpec spec;
  spec.aug.out_size = 32;
  spec.channels = 3;
  const rz::data::CacheSamples samples{.cache = &cache, .cache_row = &rows, .annotations = &anns};
  const size_t numel = 32 * 32 * 3;
  std::vector<float> plain(numel), twin(numel), again(numel), noisy(numel), noisy_twin(numel);
  const auto clean = rz::data::make_sample_transform(samples, spec, false);
  InputSpec perturbed = spec;
  perturbed.input_noise = 0.1;
  perturbed.input_dropout = 0.05;
  const auto student = rz::data::make_sample_transform(samples, perturbed, false);
  for (int64_t i = 0; i < 4; ++i) {
    Generator g1(i), g2(i), g3(i);
    clean(i, g1, plain.data(), twin.data());
    clean(i, g2, again.data(), nullptr);
    CHECK(plain == again);  // the rng alone decides the augmentation
    student(i, g3, noisy.data(), noisy_twin.data());
    CHECK(noisy != plain);        // the student's input is perturbed ...
    CHECK(noisy_twin == twin);    // ... the teacher's twin is not
  }
  // The eval twin of a training spec draws nothing and perturbs nothing.
  const InputSpec e = rz::data::eval_input(perturbed);
  CHECK_FALSE(e.aug.train);
  CHECK(e.input_noise == 0);
  CHECK(e.input_dropout == 0);
  CHECK(contains(error_message([&] {
                   InputSpec bad = spec;
                   bad.channels = 2;
                   rz::data::make_sample_transform(samples, bad, false);
                 }),
                 "channels must be 1 or 3"));
}
