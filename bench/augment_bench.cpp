// Augmentation throughput on one core: sample_augment + apply_augment with
// the default training config (random resized crop, flip, rotation,
// brightness/contrast, dropout) into a 512x512 output, for a ~600x600 gray
// source (the usual cache size), a 3-channel one, and a 2400x2400 gray
// source (the area-prefilter path); plus eval mode (plain resize).
// Prints the median over repetitions of images/s on this one thread.
//
//   augment_bench                    # defaults
//   augment_bench --images 400 --reps 5 --size 512
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "data/augment.h"

namespace {

rz::data::Image make_source(int64_t h, int64_t w, int64_t c) {
  rz::data::Image img(h, w, c);
  rz::Generator gen(42);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w * c; ++x) {
      img.row(y)[x] = static_cast<uint8_t>((x * 7 + y * 3 + gen.below(16)) & 255);
    }
  }
  return img;
}

void run(const char* name, const rz::data::Image& src, const rz::data::AugmentConfig& cfg,
         int images, int reps) {
  rz::Generator gen(1);
  std::vector<double> rates;
  uint64_t checksum = 0;
  for (int r = 0; r < reps + 1; ++r) {  // the first repetition is warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < images; ++i) {
      const auto p = rz::data::sample_augment(cfg, src.height, src.width, gen);
      const rz::data::Image out = rz::data::apply_augment(src, p, cfg);
      checksum += out.pixels[static_cast<size_t>(i) % out.pixels.size()];
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) rates.push_back(images / std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(rates.begin(), rates.end());
  const double med = rates[rates.size() / 2];
  const double mpix = med * static_cast<double>(cfg.out_size * cfg.out_size) / 1e6;
  std::printf(
      "%-34s %5lldx%-5lld c%lld -> %lldx%lld  %8.1f images/s/core (min %.1f, max %.1f)  "
      "%6.1f Mpix/s  [%llu]\n",
      name, static_cast<long long>(src.height), static_cast<long long>(src.width),
      static_cast<long long>(src.channels), static_cast<long long>(cfg.out_size),
      static_cast<long long>(cfg.out_size), med, rates.front(), rates.back(), mpix,
      static_cast<unsigned long long>(checksum % 1000));
}

}  // namespace

int main(int argc, char** argv) {
  int images = 200, reps = 5;
  int64_t size = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--images"))
      images = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps"))
      reps = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--size"))
      size = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: augment_bench [--images N] [--reps R] [--size S]\n");
      return 2;
    }
  }
  rz::data::AugmentConfig train;
  train.out_size = size;
  rz::data::AugmentConfig all = train;  // every stage on, every image
  all.rotate_prob = all.brightness_contrast_prob = all.dropout_prob = 1.0;
  rz::data::AugmentConfig eval = train;
  eval.train = false;

  const auto gray = make_source(600, 600, 1);
  const auto rgb = make_source(600, 600, 3);
  const auto big = make_source(2400, 2400, 1);
  run("train defaults, gray", gray, train, images, reps);
  run("train all stages p=1, gray", gray, all, images, reps);
  run("train defaults, 3-channel", rgb, train, images, reps);
  run("train all stages p=1, 3-channel", rgb, all, images, reps);
  run("eval resize, gray", gray, eval, images, reps);
  run("train defaults, gray, prefilter", big, train, std::max(1, images / 4), reps);
  return 0;
}
