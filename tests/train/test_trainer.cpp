// End to end on a small synthetic set: synth -> prep -> teacher ->
// distilled student -> fine-tune, the run folder's contents, and resume
// equivalence (2 epochs + resume + 2 epochs == 4 epochs, bit for bit).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/cache.h"
#include "data/synth.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "tests/data/temp_dir.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using rz::test::read_file;
using namespace rz;

namespace {
struct SmallSet {
  fs::path root;
  SmallSet() {
    root = fs::temp_directory_path() / ("rz_trainer_" + std::to_string(::getpid()));
    fs::remove_all(root);
    data::SynthOptions so;
    so.out_dir = (root / "data").string();
    so.n = 96;
    so.n_test = 4;
    so.size = 96;
    so.seed = 3;
    data::run_synth(so);
    data::PrepOptions po;
    po.data_dir = so.out_dir;
    po.out_dir = (root / "cache").string();
    po.image_size = 64;
    data::run_prep(po, {}, [](const std::string&) {});
  }
  ~SmallSet() { fs::remove_all(root); }
  TrainConfig config(const std::string& name, const std::string& stage) const {
    TrainConfig c;
    c.run.name = name;
    c.run.out_dir = (root / "runs").string();
    c.run.device = "cpu";  // bit-exact resume is a CPU property; see bench/RESULTS.md for CUDA
    c.model.name = "seresnet_tiny";
    c.model.img_size = 64;
    c.data.dir = (root / "data").string();
    c.data.cache_dir = (root / "cache").string();
    c.data.workers = 2;
    c.stage.kind = stage;
    c.train.epochs = 4;
    c.train.batch = 8;
    c.train.log_every = 2;
    c.optim.lr = 2e-3;
    c.optim.name = "adamw";
    c.model.drop_rate = 0.1;  // exercises the dropout stream across resume
    c.train.ema_decay = 0.9;  // and the EMA weights
    return c;
  }
};

// summary.csv without its wall-time column (the 6th), which no two runs share.
std::string without_seconds(const std::string& csv) {
  std::stringstream in(csv);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    size_t start = 0;
    for (int i = 0; i < 5; ++i) start = line.find(',', start) + 1;
    const size_t end = line.find(',', start);
    out += line.substr(0, start) + line.substr(end) + "\n";
  }
  return out;
}

const TrainHooks quiet{.log = [](const std::string&) {}};
}  // namespace

TEST_CASE("trainer: stages run end to end and fill the run folder; resume is bit-exact") {
  SmallSet set;

  // Teacher, 4 epochs in one go.
  const auto full = train(set.config("teacher_full", "teacher"), quiet);
  CHECK(full.epochs_run == 4);
  const fs::path full_dir = full.run_dir;
  for (const char* f : {"config.toml", "metrics.jsonl", "summary.csv", "last.ckpt", "best.ckpt",
                        "best.safetensors", "report.html"})
    CHECK_MESSAGE(fs::exists(full_dir / f), f);
  const std::string summary = read_file(full_dir / "summary.csv");
  CHECK(std::count(summary.begin(), summary.end(), '\n') == 5);  // header + 4 epochs

  // The same run in two halves.
  TrainHooks half = quiet;
  half.stop_after_epochs = 2;
  const auto first = train(set.config("teacher_split", "teacher"), half);
  CHECK(first.epochs_run == 2);
  CHECK_THROWS_WITH_AS(train(set.config("teacher_split", "teacher"), quiet),
                       doctest::Contains("resume it"), Error);
  const auto second = resume(first.run_dir, quiet);
  CHECK(second.epochs_run == 2);
  const auto a = load_safetensors((full_dir / "last.ckpt").string());
  const auto b = load_safetensors((fs::path(first.run_dir) / "last.ckpt").string());
  REQUIRE(a.tensors.size() == b.tensors.size());
  bool identical = true;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    identical = identical && a.tensors[i].first == b.tensors[i].first &&
                a.tensors[i].second.nbytes() == b.tensors[i].second.nbytes() &&
                std::memcmp(a.tensors[i].second.raw_data(), b.tensors[i].second.raw_data(),
                            a.tensors[i].second.nbytes()) == 0;
  }
  CHECK_MESSAGE(identical, "model, EMA and optimizer state after 2+2 epochs differ from 4 epochs");
  CHECK(without_seconds(read_file(fs::path(first.run_dir) / "summary.csv")) == without_seconds(summary));
  CHECK(full.history.back().train_loss == second.history.back().train_loss);
  CHECK(full.history.back().mean_auc == second.history.back().mean_auc);

  // Distilled student from the teacher, then fine-tune from the student.
  TrainConfig kd = set.config("student_kd", "student-kd");
  kd.stage.teacher = (full_dir / "best.ckpt").string();
  kd.stage.input_noise = 0.05;
  kd.stage.input_dropout = 0.05;
  kd.train.epochs = 3;
  const auto student = train(kd, quiet);
  CHECK(student.epochs_run == 3);
  // It learns: the loss falls, and the student's features move toward the teacher's.
  REQUIRE(student.history.size() == 3);
  CHECK(student.history.back().train_loss < 0.9 * student.history.front().train_loss);
  CHECK(std::isfinite(student.history.front().feat_loss));
  CHECK(student.history.back().feat_loss < 0.9 * student.history.front().feat_loss);
  // ... because of the feature term: the same student with w_feat = 0 ends farther away.
  TrainConfig kd0 = kd;
  kd0.run.name = "student_kd_without_features";
  kd0.stage.w_feat = 0.0;
  const auto unguided = train(kd0, quiet);
  CHECK(student.history.back().feat_loss < 0.9 * unguided.history.back().feat_loss);
  CHECK(std::isnan(full.history.back().feat_loss));  // a teacher has no feature term
  CHECK(read_file(fs::path(student.run_dir) / "metrics.jsonl").find("\"feat_loss\"") != std::string::npos);
  // --pretrained: a timm-format weights file into another stage.
  TrainConfig pre = set.config("from_pretrained", "finetune");
  pre.model.pretrained = (full_dir / "best.safetensors").string();
  pre.train.epochs = 1;
  CHECK(train(pre, quiet).epochs_run == 1);
  TrainConfig ft = set.config("finetune", "finetune");
  ft.stage.init = (fs::path(student.run_dir) / "best.ckpt").string();
  ft.stage.freeze = {"conv1", "bn1", "layer1"};
  ft.train.epochs = 3;
  const auto tuned = train(ft, quiet);
  CHECK(tuned.epochs_run == 3);
  CHECK(std::isfinite(tuned.last.val_loss));
  CHECK(tuned.history.back().train_loss < tuned.history.front().train_loss);
}

TEST_CASE("trainer: non-finite losses are skipped with a warning, then abort the run") {
  SmallSet set;
  // Weights with a huge (finite) classifier: the logits overflow to infinity
  // and every loss is non-finite from the first step. (Non-finite weights
  // themselves are refused when the file is read.)
  ResNetConfig mc = resnet_config("seresnet_tiny");
  mc.num_classes = 11;
  auto m = create_resnet(mc, 0);
  float* fc = m->fc->weight.data<float>();
  for (int64_t i = 0; i < m->fc->weight.numel(); ++i) fc[i] = 3e38f;
  const std::string weights = (set.root / "huge.safetensors").string();
  save_safetensors(weights, timm_state_dict(*m));

  TrainConfig c = set.config("nan_run", "finetune");
  c.stage.init = weights;
  c.train.max_nonfinite = 3;
  std::vector<std::string> lines;
  TrainHooks hooks{.log = [&](const std::string& s) { lines.push_back(s); }};
  CHECK_THROWS_WITH_AS(train(c, hooks), doctest::Contains("3 non-finite losses in a row"), Error);
  int warnings = 0;
  for (const auto& l : lines) warnings += l.find("non-finite loss") != std::string::npos;
  CHECK(warnings == 3);
}
