// `ranzcr synth` and `ranzcr prep`.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "data/cache.h"
#include "data/image.h"
#include "data/synth.h"
#include "train/cli/commands.h"
#include "train/progress.h"

namespace rz::cli {


void add_image_budget_option(CLI::App* cmd) {
  cmd->add_option_function<int64_t>(
         "--max-image-pixels", [](const int64_t& n) { data::set_max_image_pixels(n); },
         "refuse images whose header claims more pixels (width x height; default " +
             std::to_string(data::kDefaultMaxImagePixels) + ")")
      ->check(CLI::PositiveNumber);
}

namespace {
// Progress of a (done, total) callback: a live line on a terminal (stderr), else a plain
// line every 30 s and at the end (train/progress.h).
struct Progress {
  std::string label;
  std::unique_ptr<ProgressLine> line{};
  void operator()(int64_t done, int64_t total, const std::string& extra = "") {
    if (!line) line = std::make_unique<ProgressLine>(label, total, "img", ProgressLine::auto_mode());
    line->update(done, done, extra);
    if (done >= total) line->finish(extra);
  }
};
}  // namespace

void add_prep(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "prep", "Decode + CLAHE + resize a RANZCR folder once into memory-mapped uint8 shards");
  auto o = std::make_shared<data::PrepOptions>();
  auto no_clahe = std::make_shared<bool>(false);
  cmd->add_option("--data-dir", o->data_dir, "RANZCR folder (train.csv + train/)")->required();
  cmd->add_option("--out-dir", o->out_dir, "cache folder (created)")->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--size", o->image_size, "cached image size S (S x S gray)")->check(CLI::Range(32, 4096));
  cmd->add_flag("--no-clahe", *no_clahe, "skip CLAHE");
  cmd->add_option("--clahe-clip", o->clahe_clip, "CLAHE clip limit");
  cmd->add_option("--clahe-tiles", o->clahe_tiles_x, "CLAHE tiles per side")->check(CLI::Range(1, 64));
  cmd->add_option("--shard-images", o->shard_images, "images per shard (0: ~256 MiB)");
  cmd->add_option("--threads", o->threads, "decode threads (0: all cores)");
  cmd->add_option("--max-bad-fraction", o->max_bad_fraction, "abort above this share of bad images");
  add_image_budget_option(cmd);
  cmd->callback([o, no_clahe] {
    o->clahe = !*no_clahe;
    o->clahe_tiles_y = o->clahe_tiles_x;
    Progress progress{"prep " + o->split};
    const auto r = data::run_prep(
        *o, [&](int64_t done, int64_t total, int64_t bad) {
          progress(done, total, bad ? "(" + std::to_string(bad) + " bad)" : "");
        },
        [](const std::string& line) { std::fprintf(stderr, "warning: %s\n", line.c_str()); });
    std::printf("prep: %lld images in %lld shards (%lld resumed, %lld written), %lld skipped, %.1f s -> %s\n",
                static_cast<long long>(r.images), static_cast<long long>(r.shards),
                static_cast<long long>(r.shards_resumed), static_cast<long long>(r.shards_written),
                static_cast<long long>(r.bad), r.seconds, r.index_path.c_str());
  });
}

void add_synth(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "synth", "Write a synthetic RANZCR data set (same layout as the Kaggle download)");
  auto o = std::make_shared<data::SynthOptions>();
  cmd->add_option("--out", o->out_dir, "output folder")->required();
  cmd->add_option("--n", o->n, "training images")->check(CLI::PositiveNumber);
  cmd->add_option("--n-test", o->n_test, "test images");
  cmd->add_option("--size", o->size, "image size in pixels")->check(CLI::Range(64, 4096));
  cmd->add_option("--seed", o->seed, "seed (same seed, same files)");
  cmd->add_option("--difficulty", o->difficulty, "tube faintness, 0 (clear) .. 1 (barely visible)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--tube-width", o->tube_width_scale, "tube width multiplier (1: real proportions)")
      ->check(CLI::Range(0.1, 8.0));
  cmd->add_option("--tube-contrast", o->tube_contrast, "tube contrast multiplier (1: the difficulty mapping alone)")
      ->check(CLI::Range(0.01, 8.0));
  cmd->add_option("--images-per-patient", o->images_per_patient, "mean images per patient");
  cmd->add_option("--annotated-fraction", o->annotated_fraction, "share of images with devices that are annotated");
  cmd->add_option("--threads", o->threads, "threads (0: all cores)");
  auto no_devices = std::make_shared<bool>(false);
  cmd->add_flag("--no-devices", *no_devices, "same studies without the tubes drawn (a shortcut check)");
  cmd->add_flag("--force", o->overwrite, "write into a folder that already holds a data set");
  cmd->callback([o, no_devices] {
    o->draw_devices = !*no_devices;
    Progress progress{"synth"};
    const auto r = data::run_synth(*o, [&](int64_t done, int64_t total) { progress(done, total); });
    std::printf("%s\n", data::format_synth_report(r).c_str());
  });
}

}  // namespace rz::cli
