// Every ranzcr subcommand, run as a user would: the built binary, its exit
// status and what it prints. A shortened demo covers the whole pipeline.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/run_command.h"

namespace fs = std::filesystem;

namespace {
using Output = rz::test::CommandOutput;

Output run(const std::string& args) { return rz::test::run_command(std::string(RZ_CLI_PATH) + " " + args); }

bool has(const Output& o, const std::string& s) { return o.text.find(s) != std::string::npos; }

struct Dir {
  fs::path path = fs::temp_directory_path() / ("rz_cli_" + std::to_string(::getpid()));
  Dir() { fs::remove_all(path); }
  ~Dir() { fs::remove_all(path); }
  std::string operator/(const std::string& s) const { return (path / s).string(); }
};
}  // namespace

TEST_CASE("cli: info prints timm's parameter count") {
  const auto o = run("info --model seresnet152d --img-size 512 --num-classes 11");
  CHECK(o.status == 0);
  CHECK(has(o, "64,814,619"));
  const auto bad = run("info --model nosuchnet");
  CHECK(bad.status == 1);
  CHECK(has(bad, "ranzcr: error: unknown model 'nosuchnet'"));
}

TEST_CASE("cli: a shortened demo, then eval, predict, score and a resumed train on its runs") {
  Dir d;
  auto o = run("demo --out " + d.path.string() + " --n 96 --epochs 2 --img-size 64");
  INFO(o.text);
  REQUIRE(o.status == 0);
  CHECK(has(o, "mean AUC"));
  CHECK(has(o, "teacher  control distilled finetuned"));
  for (const char* run_name : {"teacher", "student_distilled", "student_control", "student_finetuned"})
    for (const char* f : {"config.toml", "metrics.jsonl", "summary.csv", "last.ckpt", "best.ckpt", "report.html"})
      CHECK_MESSAGE(fs::exists(d.path / "runs" / run_name / f), run_name, "/", f);

  const std::string teacher = d / "runs/teacher";
  o = run("eval --run " + teacher + " --ckpt last");
  CHECK(o.status == 0);
  CHECK(has(o, "mean AUC"));

  o = run("predict --weights " + d / "runs/student_finetuned/best.ckpt" +
          " --model seresnet_tiny --img-size 64 --images " + d / "data/test" +
          " --sample-submission " + d / "data/sample_submission.csv --out " + d / "sub.csv --tta-hflip");
  INFO(o.text);
  CHECK(o.status == 0);
  CHECK(fs::exists(d / "sub.csv"));
  o = run("score --pred " + d / "sub.csv" + " --truth " + d / "data/test_labels.csv");
  CHECK(o.status == 0);
  CHECK(has(o, "mean AUC"));
  o = run("score --pred " + d / "sub.csv" + " --truth " + d / "data/train.csv");
  CHECK(o.status == 1);
  CHECK(has(o, "is not in"));

  // train: a finished run refuses a restart, resume continues it
  o = run("train --config " + teacher + "/config.toml");
  CHECK(o.status == 1);
  CHECK(has(o, "resume it"));
  o = run("train --resume " + teacher + " --set optim.lr=1");
  CHECK(o.status != 0);
  o = run("train --help-config");
  CHECK(o.status == 0);
  CHECK(has(o, "stage.w_feat"));

  // prep on the same cache is a resume that rewrites nothing
  o = run("prep --data-dir " + d / "data" + " --out-dir " + d / "cache" + " --size 80");
  CHECK(o.status == 0);
  CHECK(has(o, "0 written"));
  o = run("prep --data-dir " + d / "data" + " --out-dir " + d / "cache" + " --size 96");
  CHECK(o.status == 1);
  CHECK(has(o, "ranzcr: error:"));
}

TEST_CASE("cli: synth writes the Kaggle layout; tiny-train learns") {
  Dir d;
  auto o = run("synth --out " + d.path.string() + " --n 12 --n-test 3 --size 64 --seed 5");
  CHECK(o.status == 0);
  for (const char* f : {"train.csv", "train_annotations.csv", "sample_submission.csv"})
    CHECK(fs::exists(d.path / f));
  o = run("tiny-train --epochs 3 --train-images 256 --test-images 64");
  CHECK(o.status == 0);
  CHECK(has(o, "held-out accuracy"));
  o = run("synth --n 3");  // --out is required
  CHECK(o.status != 0);
}

TEST_CASE("cli: device, precision and conv flags are checked; bench explains a missing GPU") {
  // bf16 is CUDA-only: on the CPU the run stops before reading any data.
  Dir d;
  const std::string out = " --set run.out_dir=" + d.path.string();
  const auto bf16 = run("train --device cpu --precision bf16 --set data.dir=/nonexistent" + out);
  CHECK(bf16.status == 1);
  CHECK(has(bf16, "needs a CUDA device"));
  const auto impl = run("train --conv-impl fastest");
  CHECK(impl.status != 0);
  CHECK(has(impl, "--conv-impl"));
  const auto graph = run("train --device cpu --set train.cuda_graph=true --set data.dir=/nonexistent" + out);
  CHECK(graph.status == 1);
  CHECK(has(graph, "train.cuda_graph needs a CUDA device"));
  const auto help = run("train --help-config");
  CHECK(has(help, "run.conv_impl"));
  CHECK(has(help, "train.cuda_graph"));
  const auto bench = run("bench --model seresnet_tiny --batch 2 --img-size 64");
  CHECK(bench.status == 0);
  if (has(bench, "no CUDA device")) MESSAGE("bench skipped its timings: no GPU here");
  else CHECK(has(bench, "geomean speed-up over cuDNN"));
}
