// Data pipeline throughput on the CPU (CPU-only: no GPU is involved).
//
//   1. prep: decode + CLAHE (2.0, 8x8, at full resolution) + INTER_AREA resize
//      to S, per stage (single thread, median ms per image) and end to end
//      through run_prep (shards written and fsync'ed) with 1 thread and with
//      all threads; reported as images/s and images/s per core.
//   2. loader: mmap'ed cache -> ready [B, S, S, 3] normalized float batches
//      through Loader + make_cache_transform, with 1 worker and all cores
//      (no augmentation yet: that cost comes with data/augment).
// Inputs are generated in a temp dir: gray JPEGs of --src x --src (real
// RANZCR films are 2000-3000 px, ~0.5-1 MB), film-like so JPEG and CLAHE do
// realistic work (smooth anatomy-like field, texture, bright lines).
//
//   data_bench                          # 16 images of 2048^2 -> 512
//   data_bench --images 32 --src 2500 --size 640 --threads 4 --batch 16
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "data/augment.h"
#include "data/cache.h"
#include "data/clahe.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/ranzcr_csv.h"
#include "data/resize.h"
#include "engine/generator.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

rz::data::Image film(int64_t n, uint64_t seed) {
  rz::Generator g(seed);
  rz::data::Image img(n, n, 1);
  const double cx = g.uniform(0.4, 0.6), cy = g.uniform(0.4, 0.6);
  const double slope = g.uniform(-1.5, 1.5), offset = g.uniform(-0.2, 0.2);
  for (int64_t y = 0; y < n; ++y) {
    const double fy = static_cast<double>(y) / static_cast<double>(n);
    for (int64_t x = 0; x < n; ++x) {
      const double fx = static_cast<double>(x) / static_cast<double>(n);
      // Two dark "lungs" in a brighter body, a vertical gradient, texture.
      const double lung =
          std::exp(-(std::pow((fx - cx + 0.2) / 0.13, 2) + std::pow((fy - cy) / 0.3, 2))) +
          std::exp(-(std::pow((fx - cx - 0.2) / 0.13, 2) + std::pow((fy - cy) / 0.3, 2)));
      double v =
          170.0 - 110.0 * lung + 40.0 * fy + 12.0 * std::sin(fx * 90.0) * std::sin(fy * 70.0);
      v += static_cast<double>(g.next_u64() % 17) - 8.0;
      if (std::abs(fy - (slope * fx + offset)) < 0.003) v = 250;  // a catheter-like line
      img.at(y, x) = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  }
  return img;
}

struct Args {
  int images = 16;
  int64_t src = 2048;
  int64_t size = 512;
  int threads = 0;
  int64_t batch = 32;
  int loader_epochs = 3;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "data_bench: %s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--images")
      a.images = std::max(1, std::stoi(next()));
    else if (s == "--src")
      a.src = std::stoll(next());
    else if (s == "--size")
      a.size = std::stoll(next());
    else if (s == "--threads")
      a.threads = std::stoi(next());
    else if (s == "--batch")
      a.batch = std::stoll(next());
    else if (s == "--epochs")
      a.loader_epochs = std::max(1, std::stoi(next()));
    else {
      std::fprintf(stderr,
                   "usage: data_bench [--images N] [--src PX] [--size S] [--threads T] "
                   "[--batch B] [--epochs E]\n");
      return 2;
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int all = a.threads > 0 ? a.threads : cores;
  std::printf("data_bench: CPU-only (no GPU used); %d hardware threads, 'all threads' = %d\n",
              cores, all);

  const fs::path tmp = fs::temp_directory_path() / ("rz_data_bench_" + std::to_string(::getpid()));
  fs::create_directories(tmp / "train");
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{tmp};

  try {
    // ---- inputs ----
    auto t0 = Clock::now();
    std::string csv = "StudyInstanceUID";
    for (auto name : rz::kRanzcrLabels) csv += "," + std::string(name);
    csv += ",PatientID\n";
    std::vector<std::string> paths;
    uintmax_t jpeg_bytes = 0;
    for (int i = 0; i < a.images; ++i) {
      const std::string uid = "1.2.826.0.1." + std::to_string(i);
      csv += uid + ",0,0,1,0,0,0,1,0,0,1,0,P" + std::to_string(i) + "\n";
      paths.push_back((tmp / "train" / (uid + ".jpg")).string());
      rz::data::write_jpeg(paths.back(), film(a.src, static_cast<uint64_t>(i) + 1), 95);
      jpeg_bytes += fs::file_size(paths.back());
    }
    std::ofstream(tmp / "train.csv") << csv;
    std::printf("inputs: %d gray JPEGs %lldx%lld (q95, %.2f MB each) generated in %.1f s\n",
                a.images, static_cast<long long>(a.src), static_cast<long long>(a.src),
                static_cast<double>(jpeg_bytes) / a.images / 1e6, seconds_since(t0));

    // ---- 1. per-stage, single thread ----
    std::vector<double> dec_ms, clahe_ms, resize_ms;
    for (const std::string& p : paths) {
      auto t = Clock::now();
      const rz::data::Image img = rz::data::decode_image(p, 1);
      dec_ms.push_back(seconds_since(t) * 1e3);
      t = Clock::now();
      const rz::data::Image eq = rz::data::clahe(img, 2.0, 8, 8);
      clahe_ms.push_back(seconds_since(t) * 1e3);
      t = Clock::now();
      const rz::data::Image small = rz::data::resize_area(eq, a.size, a.size);
      resize_ms.push_back(seconds_since(t) * 1e3);
    }
    const double stage_ms = median(dec_ms) + median(clahe_ms) + median(resize_ms);
    std::printf(
        "prep stages (1 thread, median per image): decode %.1f ms, CLAHE %.1f ms, "
        "resize_area->%lld %.1f ms; sum %.1f ms = %.1f images/s\n",
        median(dec_ms), median(clahe_ms), static_cast<long long>(a.size), median(resize_ms),
        stage_ms, 1e3 / stage_ms);

    // ---- 1b. run_prep end to end ----
    double prep_rate_1 = 0;
    for (int threads : {1, all}) {
      rz::data::PrepOptions o;
      o.data_dir = tmp.string();
      o.out_dir = (tmp / ("cache_t" + std::to_string(threads))).string();
      o.image_size = a.size;
      o.threads = threads;
      const rz::data::PrepReport rep = rz::data::run_prep(o);
      const double rate = static_cast<double>(rep.images) / rep.seconds;
      if (threads == 1) prep_rate_1 = rate;
      std::printf(
          "run_prep %2d thread%s: %d images in %.2f s = %.1f images/s, %.1f images/s per "
          "thread (%.2fx over 1 thread)\n",
          threads, threads == 1 ? " " : "s", a.images, rep.seconds, rate, rate / threads,
          rate / prep_rate_1);
      if (threads == all) break;  // --threads 1 or a 1-core machine: once is enough
    }

    // ---- 2. loader: cache -> normalized float batches ----
    const rz::data::ImageCache cache = rz::data::ImageCache::open((tmp / "cache_t1").string());
    // Enough samples for several batches per epoch: each image used repeatedly
    // (from the page cache, as a warm mmap'ed cache is in training).
    std::vector<int64_t> samples;
    while (static_cast<int64_t>(samples.size()) < std::max<int64_t>(8 * a.batch, 128))
      samples.push_back(static_cast<int64_t>(samples.size()) % cache.size());
    // The plain transform (resize + normalize), then the training one: the
    // default random resized crop / rotation / flip / brightness-contrast /
    // dropout of data/augment.h on the cached image, then normalize.
    rz::data::AugmentConfig aug;
    aug.out_size = a.size;
    const auto& mean = rz::data::kImageNetMean;
    const auto& stdv = rz::data::kImageNetStd;
    const rz::data::SampleTransform augmenting = [&](int64_t i, rz::Generator& rng, float* out, float*) {
      const rz::data::Image src = cache.load(i);
      const auto params = rz::data::sample_augment(aug, src.height, src.width, rng);
      const rz::data::Image img = rz::data::apply_augment(src, params, aug);
      for (int64_t p = 0; p < img.height * img.width; ++p)
        for (size_t c = 0; c < 3; ++c)
          out[p * 3 + static_cast<int64_t>(c)] =
              (static_cast<float>(img.pixels[static_cast<size_t>(p)]) / 255.0f - mean[c]) / stdv[c];
    };
    for (const bool augmented : {false, true}) {
      double loader_rate_1 = 0;
      for (int workers : {1, all}) {
        rz::data::LoaderOptions lo;
        lo.batch = a.batch;
        lo.workers = workers;
        lo.prefetch = 4;
        rz::data::Loader loader(samples, lo, {a.size, a.size, 3},
                                augmented ? augmenting : rz::data::make_cache_transform(cache, a.size, 3));
        std::vector<double> rates;
        for (int e = 0; e < a.loader_epochs + 1; ++e) {  // epoch 0 warms up
          const auto t = Clock::now();
          loader.start_epoch(e);
          int64_t n = 0;
          double checksum = 0;
          while (auto b = loader.next()) {
            n += b->images.size(0);
            checksum += static_cast<double>(b->images.data<float>()[0]);
          }
          const double s = seconds_since(t);
          if (e > 0) rates.push_back(static_cast<double>(n) / s);
          if (checksum != checksum) std::printf("(nan)\n");  // keep the reads alive
        }
        const double rate = median(rates);
        if (workers == 1) loader_rate_1 = rate;
        std::printf(
            "loader %2d worker%s: cache -> %s[%lld,%lld,%lld,3] f32 batches: %.0f images/s, "
            "%.0f images/s per worker (%.2fx over 1 worker)\n",
            workers, workers == 1 ? " " : "s", augmented ? "augmented " : "",
            static_cast<long long>(a.batch), static_cast<long long>(a.size),
            static_cast<long long>(a.size), rate, rate / workers, rate / loader_rate_1);
        if (workers == all) break;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "data_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
