// Bad input through the ranzcr binary and the library, for prediction,
// scoring and memory: every case checks the exit status (1, never a crash),
// the message (the file, line or field and the value) and that nothing was
// written or lost.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "data/ranzcr_csv.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "engine/storage.h"
#include "engine/tensor.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"
#include "tests/train/tiny_run.h"
#include "train/config.h"
#include "train/memory_plan.h"

namespace fs = std::filesystem;

namespace {

using rz::test::CommandOutput;

CommandOutput cli(const std::string& args) {
  return rz::test::run_command(std::string(RZ_CLI_PATH) + " " + args);
}
bool has(const CommandOutput& o, const std::string& s) { return o.text.find(s) != std::string::npos; }

// A small synthetic data set (8 train, 6 test images) and random weights of
// the tiny model, shared by the prediction cases.
struct PredictFixture {
  rz::test::TempDir dir{"rel_cli"};
  std::string data = (dir.path() / "data").string();
  std::string weights = (dir.path() / "w.safetensors").string();
  std::string out = (dir.path() / "sub.csv").string();
  PredictFixture() {
    const auto o = cli("synth --out " + data + " --n 8 --n-test 6 --size 64 --threads 2");
    REQUIRE_MESSAGE(o.status == 0, o.text);
    rz::ResNetConfig cfg = rz::resnet_config("seresnet_tiny");
    cfg.num_classes = 11;
    auto model = rz::create_resnet(cfg, 1);
    rz::save_safetensors(weights, rz::timm_state_dict(*model));
  }
  std::string predict_args(const std::string& images) const {
    return "predict --weights " + weights + " --model seresnet_tiny --img-size 64 --images " +
           images + " --out " + out + " --device cpu --batch 4";
  }
  std::string first_test_image() const {
    for (const auto& e : fs::directory_iterator(fs::path(data) / "test"))
      if (e.path().extension() == ".jpg") return e.path().string();
    FAIL("no test image");
    return {};
  }
};

std::string header_row() {
  std::string h = "StudyInstanceUID";
  for (const auto& name : rz::kRanzcrLabels) h += "," + std::string(name);
  return h + "\n";
}

// A train.csv (truth) and a submission (pred) over n studies "1.2.3.<i>":
// study i has every label = label(i) and every prediction = "0.25".
struct ScoreFiles {
  std::string truth, pred;
};
ScoreFiles score_files(int n, const std::function<int(int)>& label) {
  ScoreFiles f{header_row(), header_row()};
  f.truth.insert(f.truth.size() - 1, ",PatientID");
  for (int i = 0; i < n; ++i) {
    const std::string u = "1.2.3." + std::to_string(i);
    f.truth += u;
    f.pred += u;
    for (size_t k = 0; k < rz::kRanzcrLabels.size(); ++k) {
      f.truth += "," + std::to_string(label(i));
      f.pred += ",0.25";
    }
    f.truth += ",p" + std::to_string(i) + "\n";
    f.pred += "\n";
  }
  return f;
}

}  // namespace

TEST_CASE("reliability: predict over a folder with one corrupt image fails cleanly and writes nothing") {
  PredictFixture f;
  const std::string bad = f.first_test_image();
  rz::test::write_file(bad, "this is not a JPEG at all, just text long enough to look like a file");
  const auto o = cli(f.predict_args(f.data + "/test"));
  INFO(o.text);
  CHECK(o.status == 1);  // not 134: no exception escaped a parallel region
  CHECK(has(o, "ranzcr: error:"));
  CHECK(has(o, fs::path(bad).filename().string()));
  CHECK_FALSE(has(o, "terminate called"));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("reliability: predict with an empty image file names it") {
  PredictFixture f;
  const std::string bad = f.first_test_image();
  rz::test::write_file(bad, "");
  const auto o = cli(f.predict_args(f.data + "/test"));
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(has(o, fs::path(bad).filename().string()));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("reliability: predict with a sample submission listing a missing image names the UID") {
  PredictFixture f;
  const std::string bad = f.first_test_image();
  const std::string uid = fs::path(bad).stem().string();
  fs::remove(bad);
  const auto o = cli(f.predict_args(f.data + "/test") + " --sample-submission " + f.data +
                     "/sample_submission.csv");
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(has(o, uid));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("reliability: predict with NaN weights fails naming the weights file and writes nothing") {
  PredictFixture f;
  rz::ResNetConfig cfg = rz::resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto model = rz::create_resnet(cfg, 1);
  rz::NamedTensors sd = rz::timm_state_dict(*model);
  for (auto& [name, t] : sd)
    if (name.find("fc.weight") != std::string::npos) t.data<float>()[0] = std::nanf("");
  const std::string nan_weights = (f.dir.path() / "nan.safetensors").string();
  rz::save_safetensors(nan_weights, sd);
  const auto o = cli("predict --weights " + nan_weights +
                     " --model seresnet_tiny --img-size 64 --images " + f.data + "/test --out " +
                     f.out + " --device cpu");
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(has(o, "nan.safetensors"));
  CHECK_FALSE(has(o, "probability must be in"));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("reliability: score refuses a folder, empty sets and an undefined score") {
  rz::test::TempDir t("rel_score");
  const std::string truth = t.write("train.csv", header_row());

  SUBCASE("a folder as --pred") {
    const auto o = cli("score --pred " + t.path().string() + " --truth " + truth);
    CHECK(o.status == 1);
    CHECK(has(o, t.path().string()));
    CHECK(has(o, "is a folder"));
  }
  SUBCASE("a folder as --truth") {
    const std::string pred = t.write("p.csv", header_row());
    const auto o = cli("score --pred " + pred + " --truth " + t.path().string());
    CHECK(o.status == 1);
    CHECK(has(o, "is a folder"));
  }
  SUBCASE("header-only predictions") {
    const ScoreFiles f = score_files(1, [](int) { return 0; });
    const auto o = cli("score --pred " + t.write("p.csv", header_row()) + " --truth " +
                       t.write("t1.csv", f.truth));
    INFO(o.text);
    CHECK(o.status == 1);
    CHECK_FALSE(has(o, "nan"));
  }
  SUBCASE("every label single-class: no score, not a mean of nan") {
    const ScoreFiles f = score_files(3, [](int) { return 0; });
    const auto o = cli("score --pred " + t.write("p.csv", f.pred) + " --truth " + t.write("t.csv", f.truth));
    INFO(o.text);
    CHECK(o.status == 1);
    CHECK(has(o, "undefined"));
    CHECK_FALSE(has(o, "nan"));
  }
}

TEST_CASE("reliability: score names the line, column and value of a bad prediction") {
  rz::test::TempDir t("rel_score_values");
  const ScoreFiles f = score_files(4, [](int i) { return i % 2; });
  const std::string truth = t.write("t.csv", f.truth);
  for (const char* bad_value : {"nan", "abc", "inf", ""}) {
    std::string pr = f.pred;
    const size_t pos = pr.find("0.25", pr.find("1.2.3.2"));
    pr.replace(pos, 4, bad_value);
    const auto o = cli("score --pred " + t.write("p.csv", pr) + " --truth " + truth);
    INFO(bad_value, o.text);
    CHECK(o.status == 1);
    CHECK(has(o, "p.csv:4"));
    CHECK(has(o, "'" + std::string(bad_value) + "'"));
  }
}

TEST_CASE("reliability: out of host memory says what was allocated and what to lower") {
  // 2^50 bytes: no machine has them, so aligned_alloc returns null.
  const int64_t huge = int64_t{1} << 48;
  try {
    rz::AllocationPurpose purpose("the test's batch", "lower test.batch");
    rz::Tensor t = rz::Tensor::empty({huge}, rz::DType::F32);
    FAIL("the allocation succeeded");
  } catch (const rz::Error& e) {
    const std::string m = e.what();
    CHECK(m.find("out of host memory") != std::string::npos);
    CHECK(m.find("GB") != std::string::npos);
    CHECK(m.find("for the test's batch; lower test.batch") != std::string::npos);
  }
  try {
    rz::Tensor t = rz::Tensor::empty({huge}, rz::DType::F32);
    FAIL("the allocation succeeded");
  } catch (const rz::Error& e) {
    const std::string m = e.what();
    CHECK(m.find("for a tensor; lower the batch size") != std::string::npos);
  }
}

TEST_CASE("reliability: a run that cannot fit in memory stops before it starts, with the estimate") {
  rz::TrainConfig cfg;
  cfg.model.name = "seresnet152d";
  cfg.model.img_size = 4096;
  cfg.train.batch = 4096;
  try {
    rz::check_training_memory(cfg, -1);
    FAIL("a 4096 px batch of 4096 fitted in host memory");
  } catch (const rz::Error& e) {
    const std::string m = e.what();
    CHECK(m.find("needs an estimated") != std::string::npos);
    CHECK(m.find("activations saved for backward (batch 4096, 4096 px)") != std::string::npos);
    CHECK(m.find("train.batch") != std::string::npos);
    CHECK(m.find("run.memory_check = false") != std::string::npos);
  }
  cfg.run.memory_check = false;
  CHECK_NOTHROW(rz::check_training_memory(cfg, -1));
}

TEST_CASE("memory estimate: the model's parts follow the configuration") {
  rz::TrainConfig cfg;
  cfg.model.name = "seresnet152d";
  cfg.model.img_size = 512;
  cfg.train.batch = 32;
  cfg.run.precision = "bf16";
  cfg.optim.name = "sgd";
  const rz::MemoryEstimate gpu = rz::estimate_training_memory(cfg, true);
  // Parameters 64,814,619 (timm): weights + gradients + momentum = 3 x 4 bytes each.
  double params_part = 0, act_part = 0;
  for (const auto& [name, b] : gpu.device_parts) {
    if (name.find("activations") != std::string::npos) act_part = b;
    else if (name.find("CUDA") == std::string::npos) params_part += b;
  }
  CHECK(params_part == doctest::Approx(3.0 * 4 * 64814619.0));
  // The calibration point: the measured peak of this step on an H200 was
  // 19.44 GiB of pool memory (bench/RESULTS.md); the estimate of what the
  // pool holds (model parts + activations) stays within 10% of it.
  const double measured = 19.44 * (1 << 30);
  CHECK(std::abs(params_part + act_part - measured) / measured < 0.10);
  // fp32 activations double; AdamW keeps two state copies; EMA and a
  // distillation teacher add one weight copy each.
  cfg.run.precision = "fp32";
  const auto fp32 = rz::estimate_training_memory(cfg, true);
  CHECK(fp32.device_bytes - gpu.device_bytes == doctest::Approx(act_part));
  cfg.optim.name = "adamw";
  cfg.train.ema_decay = 0.999;
  cfg.stage.kind = "student-kd";
  const auto more = rz::estimate_training_memory(cfg, true);
  CHECK(more.device_bytes - fp32.device_bytes == doctest::Approx(3.0 * 4 * 64814619.0));
  // On the CPU everything is host memory.
  const auto cpu = rz::estimate_training_memory(cfg, false);
  CHECK(cpu.device_bytes == 0);
  CHECK(cpu.device_parts.empty());
  CHECK(cpu.host_bytes > more.device_bytes);
}

TEST_CASE("reliability: train refuses a prep cache that lacks studies of train.csv, unless told") {
  rz::test::TinyRunData data;
  const fs::path csv = data.path() / "data" / "train.csv";
  std::ifstream in(csv);
  std::string header, first;
  std::getline(in, header);
  std::getline(in, first);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  // A study added to train.csv after the cache was built.
  const std::string new_uid = "1.2.826.0.1.999999";
  const std::string added = new_uid + first.substr(first.find(','));
  rz::test::write_file(csv.string(), header + "\n" + first + "\n" + all + added + "\n");
  const std::string runs = (data.path() / "runs").string();
  const std::string toml = (data.path() / "run.toml").string();
  rz::test::write_file(toml, data.toml("stale", runs, 1));
  auto o = cli("train --config " + toml);
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(has(o, new_uid));
  CHECK(has(o, "cache"));
  CHECK_FALSE(fs::exists(fs::path(runs) / "stale" / "last.ckpt"));
  o = cli("train --config " + toml + " --set run.name=stale_ok --set data.allow_missing_studies=true");
  INFO(o.text);
  CHECK(o.status == 0);
  CHECK(fs::exists(fs::path(runs) / "stale_ok" / "last.ckpt"));
}

TEST_CASE("reliability: train that cannot fit stops before the data is read, naming the setting") {
  rz::test::TinyRunData data;
  const std::string runs = (data.path() / "runs").string();
  const std::string toml = (data.path() / "run.toml").string();
  rz::test::write_file(toml, data.toml("huge", runs, 1));
  auto o = cli("train --config " + toml +
               " --set model.name=seresnet152d --set model.img_size=4096 --set train.batch=4096");
  INFO(o.text);
  CHECK(o.status == 1);
  CHECK(has(o, "needs an estimated"));
  CHECK(has(o, "run.memory_check = false"));
  CHECK_FALSE(fs::exists(fs::path(runs) / "huge" / "last.ckpt"));
}
