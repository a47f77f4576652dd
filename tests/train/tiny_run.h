// A training run small enough to repeat dozens of times: 40 synthetic
// studies cached at 32 px, seresnet_tiny, 3 epochs of 4 steps on one CPU
// thread (about 0.3 s as a `ranzcr` process). With these settings (seed 0,
// EMA 0.9, dropout 0.1) epochs 1 and 3 are best and epoch 2 is not, so a
// run passes both kinds of epoch-end sequence, and EMA, dropout and AdamW
// state all cross every resume.
#pragma once

#include <filesystem>
#include <string>

#include "data/cache.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"
#include "train/config.h"

namespace rz::test {

class TinyRunData {
 public:
  TinyRunData() : dir_("tiny_run") {
    data::SynthOptions so;
    so.out_dir = (dir_.path() / "data").string();
    so.n = 40;
    so.n_test = 0;
    so.size = 64;
    so.seed = 1;
    so.threads = 2;
    data::run_synth(so);
    data::PrepOptions po;
    po.data_dir = so.out_dir;
    po.out_dir = (dir_.path() / "cache").string();
    po.image_size = 32;
    po.threads = 2;
    data::run_prep(po, {}, [](const std::string&) {});
  }

  const std::filesystem::path& path() const { return dir_.path(); }

  // The run's configuration file text: run `name` under `out_dir`.
  std::string toml(const std::string& name, const std::string& out_dir, int epochs = 3) const {
    return "[run]\nname = \"" + name + "\"\nout_dir = \"" + out_dir +
           "\"\ndevice = \"cpu\"\nthreads = 1\nseed = 0\n"
           "[model]\nname = \"seresnet_tiny\"\nimg_size = 32\ndrop_rate = 0.1\n"
           "[data]\ndir = \"" + (dir_.path() / "data").string() + "\"\ncache_dir = \"" +
           (dir_.path() / "cache").string() + "\"\nworkers = 1\n"
           "[stage]\nkind = \"finetune\"\n"
           "[optim]\nname = \"adamw\"\nlr = 0.005\n"
           "[train]\nepochs = " + std::to_string(epochs) + "\nbatch = 8\nlog_every = 2\nema_decay = 0.9\n";
  }

  TrainConfig config(const std::string& name, const std::string& out_dir, int epochs = 3) const {
    return parse_config(toml(name, out_dir, epochs), name + ".toml");
  }

 private:
  TempDir dir_;
};

}  // namespace rz::test
