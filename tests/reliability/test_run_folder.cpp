// Bad input in a run folder: its checkpoints, logs and configuration, as a
// damaged disk, a hand edit, an older version or a hostile link leaves them.
// Each case breaks one thing in a copy of a real run folder (a tiny run
// stopped after 2 of 3 epochs, best epoch 1; tests/train/tiny_run.h), then
// checks the error or exit status, that its message names the file, the
// field or tensor and the value, and that nothing was lost (the files are
// as they were, links were not followed).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/atomic_file.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"
#include "tests/train/tiny_run.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/run_folder.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using rz::test::write_file;
using rz::test::read_file;
using rz::test::contains;
using rz::test::error_message;
using rz::test::TempDir;

namespace {

// Every file of a folder (links as "-> target"), to show nothing changed.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    out[name] = e.is_symlink() ? "-> " + fs::read_symlink(e.path()).string() : read_file(e.path());
  }
  return out;
}

struct Logs {
  std::vector<std::string> lines;
  rz::TrainHooks hooks() {
    rz::TrainHooks h;
    h.log = [this](const std::string& s) { lines.push_back(s); };
    return h;
  }
  bool has(const std::string& part) const {
    for (const auto& l : lines)
      if (contains(l, part)) return true;
    return false;
  }
};

// Two real run folders, made once: "half" (3 epochs configured, stopped after
// 2; best epoch 1) and "one" (1 epoch, which is its best).
struct Fixture {
  rz::test::TinyRunData data;
  TempDir runs{"rf_runs"};
  fs::path half, one;
  Fixture() {
    Logs quiet;
    rz::TrainHooks h = quiet.hooks();
    h.stop_after_epochs = 2;
    half = rz::train(data.config("half", runs.path().string(), 3), h).run_dir;
    one = rz::train(data.config("one", runs.path().string(), 1), quiet.hooks()).run_dir;
    REQUIRE(rz::read_checkpoint_state((half / "last.ckpt").string()).epoch == 2);
    REQUIRE(rz::read_checkpoint_state((half / "last.ckpt").string()).best_epoch == 1);
    REQUIRE(rz::read_checkpoint_state((one / "last.ckpt").string()).best_epoch == 1);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// A private copy of a fixture run folder.
struct RunCopy {
  TempDir tmp{"rf_case"};
  fs::path dir;
  explicit RunCopy(const fs::path& from) : dir(tmp.path() / "run") {
    fs::copy(from, dir, fs::copy_options::recursive);
  }
  fs::path operator/(const std::string& f) const { return dir / f; }
};

// Rewrites the TrainState JSON of a checkpoint (tensors and other metadata kept).
void edit_state(const fs::path& ckpt, const std::function<void(nlohmann::json&)>& edit) {
  auto file = rz::load_safetensors(ckpt.string());
  auto j = nlohmann::json::parse(file.metadata.at("state"));
  edit(j);
  file.metadata["state"] = j.dump();
  rz::save_safetensors(ckpt.string(), file.tensors, file.metadata);
}

void edit_config(const fs::path& dir, const std::function<void(rz::TrainConfig&)>& edit) {
  rz::TrainConfig c = rz::load_config((dir / "config.toml").string());
  edit(c);
  write_file(dir / "config.toml", rz::config_to_toml(c));
}

rz::test::CommandOutput cli(const std::string& args) {
  return rz::test::run_command(std::string(RZ_CLI_PATH) + " " + args);
}

rz::NamedTensors tiny_weights() {
  rz::ResNetConfig mc = rz::resnet_config("seresnet_tiny");
  mc.num_classes = 11;
  return rz::timm_state_dict(*rz::create_resnet(mc, 7));
}

void set_value(rz::NamedTensors& w, const std::string& name, float v) {
  for (auto& [n, t] : w)
    if (n == name) t.data<float>()[3] = v;
}

}  // namespace

TEST_CASE("run folder: an edited config.toml is refused on resume, naming each key and both values") {
  RunCopy run(fixture().half);
  edit_config(run.dir, [](rz::TrainConfig& c) {
    c.optim.name = "sgd";
    c.model.img_size = 64;
  });
  const auto before = snapshot(run.dir);
  const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
  CHECK(contains(msg, (run / "config.toml").string()));
  CHECK(contains(msg, (run / "last.ckpt").string()));
  CHECK(contains(msg, "optim.name ('adamw' in last.ckpt, 'sgd' in config.toml)"));
  CHECK(contains(msg, "model.img_size (32 in last.ckpt, 64 in config.toml)"));
  CHECK(contains(msg, "--allow-config-change"));
  CHECK(snapshot(run.dir) == before);
  // The same through the binary: one error line, exit status 1.
  const auto o = cli("train --resume " + run.dir.string());
  CHECK(o.status == 1);
  CHECK(contains(o.text, "ranzcr: error: cannot resume"));
  CHECK(contains(o.text, "optim.name"));
  CHECK(snapshot(run.dir) == before);
}

TEST_CASE("run folder: safe keys may change on resume (train.epochs extends the run) and are logged") {
  RunCopy run(fixture().half);
  edit_config(run.dir, [](rz::TrainConfig& c) {
    c.train.epochs = 4;
    c.data.workers = 2;
    c.train.log_every = 3;
    c.run.threads = 2;
  });
  Logs logs;
  const auto r = rz::resume(run.dir.string(), logs.hooks());
  CHECK(r.epochs_run == 2);
  CHECK(logs.has("resume: train.epochs changed from 3 to 4"));
  CHECK(logs.has("resume: data.workers changed from 1 to 2"));
  CHECK(rz::read_checkpoint_state((run / "last.ckpt").string()).epoch == 4);
  for (const char* key : {"train.epochs", "run.threads", "data.workers", "train.log_every"})
    CHECK(std::find(rz::resume_safe_config_keys().begin(), rz::resume_safe_config_keys().end(), key) !=
          rz::resume_safe_config_keys().end());
  // Every safe key is a configuration key.
  const std::string help = rz::config_keys_help();
  for (const auto& key : rz::resume_safe_config_keys()) CHECK_MESSAGE(contains(help, key), key);
}

TEST_CASE("run folder: allow_config_change resumes an edited run and records the new configuration") {
  RunCopy run(fixture().half);
  edit_config(run.dir, [](rz::TrainConfig& c) { c.optim.lr = 0.001; });
  CHECK(contains(error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); }),
                 "optim.lr (0.005 in last.ckpt, 0.001 in config.toml)"));
  Logs logs;
  rz::TrainHooks h = logs.hooks();
  h.allow_config_change = true;
  CHECK(rz::resume(run.dir.string(), h).epochs_run == 1);
  CHECK(logs.has("optim.lr changed from 0.005 to 0.001 (allowed by allow_config_change)"));
  CHECK(contains(rz::read_checkpoint_state((run / "last.ckpt").string()).config_toml, "lr = 0.001"));
}

TEST_CASE("run folder: a truncated or corrupt last.ckpt is refused naming it, and nothing else changes") {
  for (const char* damage : {"truncated", "garbage header"}) {
    CAPTURE(damage);
    RunCopy run(fixture().half);
    const fs::path ckpt = run / "last.ckpt";
    if (std::string(damage) == "truncated") {
      fs::resize_file(ckpt, fs::file_size(ckpt) / 2);
    } else {
      std::string bytes = read_file(ckpt);
      for (size_t i = 0; i < 8; ++i) bytes[i] = '\xff';
      write_file(ckpt, bytes);
    }
    const auto before = snapshot(run.dir);
    const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
    CHECK(contains(msg, ckpt.string()));
    CHECK(snapshot(run.dir) == before);
    const auto o = cli("train --resume " + run.dir.string());
    CHECK(o.status == 1);
    CHECK(contains(o.text, ckpt.string()));
  }
}

TEST_CASE("run folder: a missing best.ckpt, or one of another epoch, is refused naming it") {
  {
    RunCopy run(fixture().half);
    fs::remove(run / "best.ckpt");
    const auto before = snapshot(run.dir);
    const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
    CHECK(contains(msg, (run / "best.ckpt").string() + " is missing"));
    CHECK(contains(msg, "best_epoch = 1"));
    CHECK(snapshot(run.dir) == before);
  }
  {
    RunCopy run(fixture().half);
    edit_state(run / "best.ckpt", [](nlohmann::json& j) {
      j["epoch"] = 2;
      j["best_epoch"] = 2;
    });
    const auto before = snapshot(run.dir);
    const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
    CHECK(contains(msg, (run / "best.ckpt").string() + " holds epoch 2 but last.ckpt records best_epoch = 1"));
    CHECK(snapshot(run.dir) == before);
  }
}

TEST_CASE("run folder: best.* lagging behind a last.ckpt of the best epoch are rewritten from it") {
  RunCopy run(fixture().one);
  const std::string best = read_file(run / "best.ckpt"), best_st = read_file(run / "best.safetensors");
  fs::remove(run / "best.ckpt");
  write_file(run / "best.safetensors", "not yet rewritten");
  Logs logs;
  CHECK(rz::resume(run.dir.string(), logs.hooks()).epochs_run == 0);
  CHECK(logs.has("best.ckpt and best.safetensors rewritten from last.ckpt (best epoch 1)"));
  CHECK(read_file(run / "best.ckpt") == best);
  CHECK(read_file(run / "best.safetensors") == best_st);
  // An older best epoch: best.safetensors comes back from best.ckpt.
  RunCopy half(fixture().half);
  const std::string half_st = read_file(half / "best.safetensors");
  fs::remove(half / "best.safetensors");
  edit_config(half.dir, [](rz::TrainConfig& c) { c.train.epochs = 2; });
  CHECK(rz::resume(half.dir.string(), logs.hooks()).epochs_run == 0);
  CHECK(read_file(half / "best.safetensors") == half_st);
}

TEST_CASE("run folder: a checkpoint without optimizer state never resumes with a fresh optimizer") {
  const fs::path best = fixture().half / "best.ckpt";
  rz::ResNetConfig mc = rz::resnet_config("seresnet_tiny");
  mc.num_classes = 11;
  auto model = rz::create_resnet(mc, 0);
  rz::Adam adam(model->parameters(), rz::AdamHyper{});
  const std::string msg = error_message([&] { rz::load_checkpoint(best.string(), *model, nullptr, &adam); });
  CHECK(contains(msg, best.string()));
  CHECK(contains(msg, "holds no optimizer state"));
  // best.ckpt put in last.ckpt's place.
  RunCopy run(fixture().half);
  fs::copy_file(run / "best.ckpt", run / "last.ckpt", fs::copy_options::overwrite_existing);
  const auto before = snapshot(run.dir);
  const std::string m2 = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
  CHECK(contains(m2, (run / "last.ckpt").string()));
  CHECK(contains(m2, "holds no optimizer state"));
  CHECK(snapshot(run.dir) == before);
  // Another optimizer's state.
  rz::Sgd sgd(model->parameters(), rz::SgdHyper{.lr = 0.1, .momentum = 0.9});
  CHECK(contains(error_message([&] {
                   rz::load_checkpoint((fixture().half / "last.ckpt").string(), *model, nullptr, &sgd);
                 }),
                 "its optimizer state is for 'adamw', the run uses 'sgd'"));
}

TEST_CASE("run folder: every field of the checkpoint state is checked, naming the file, field and value") {
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"rng word abc", [](auto& j) { j["rng"]["dropout"][0] = "abc"; }, {"'rng.dropout[0]' = \"abc\"", "unsigned 64-bit"}},
      {"rng word -1", [](auto& j) { j["rng"]["dropout"][1] = "-1"; }, {"'rng.dropout[1]' = \"-1\""}},
      {"rng word 2^64", [](auto& j) { j["rng"]["dropout"][2] = "18446744073709551616"; },
       {"'rng.dropout[2]' = \"18446744073709551616\""}},
      {"rng word with a space", [](auto& j) { j["rng"]["dropout"][3] = " 12"; }, {"'rng.dropout[3]' = \" 12\""}},
      {"rng word as a number", [](auto& j) { j["rng"]["dropout"][0] = 5; }, {"'rng.dropout[0]' = 5"}},
      {"rng of 3 words", [](auto& j) { j["rng"]["dropout"].erase(3); }, {"'rng.dropout'", "4 words"}},
      {"rng all zero", [](auto& j) { j["rng"]["dropout"] = {"0", "0", "0", "0"}; }, {"'rng.dropout'", "not all zero"}},
      {"epoch 1e18", [](auto& j) { j["epoch"] = 1e18; }, {"'epoch' = 1e+18", "an integer in 0..1000000"}},
      {"epoch 10^18", [](auto& j) { j["epoch"] = int64_t{1000000000000000000}; },
       {"'epoch' = 1000000000000000000"}},
      {"negative epoch", [](auto& j) { j["epoch"] = -3; }, {"'epoch' = -3"}},
      {"epoch as a string", [](auto& j) { j["epoch"] = "2"; }, {"'epoch' = \"2\""}},
      {"negative step", [](auto& j) { j["step"] = -1; }, {"'step' = -1"}},
      {"fractional batch", [](auto& j) { j["batch_in_epoch"] = 0.5; }, {"'batch_in_epoch' = 0.5"}},
      {"best_epoch after epoch", [](auto& j) { j["best_epoch"] = 5; }, {"'best_epoch' = 5", "-1..2"}},
      {"best_metric a string", [](auto& j) { j["best_metric"] = "high"; }, {"'best_metric' = \"high\""}},
      {"config_toml a number", [](auto& j) { j["config_toml"] = 7; }, {"'config_toml' = 7"}},
      {"step missing", [](auto& j) { j.erase("step"); }, {"'step' is missing"}},
      {"rng not an object", [](auto& j) { j["rng"] = "x"; }, {"'rng' = \"x\""}},
  };
  RunCopy run(fixture().half);
  const fs::path ckpt = run / "last.ckpt";
  const std::string good = read_file(ckpt);
  for (const auto& c : cases) {
    CAPTURE(c.what);
    write_file(ckpt, good);
    edit_state(ckpt, c.edit);
    const std::string msg = error_message([&] { rz::read_checkpoint_state(ckpt.string()); });
    CHECK(contains(msg, "checkpoint '" + ckpt.string() + "'"));
    for (const auto& e : c.expect) CHECK_MESSAGE(contains(msg, e), msg);
  }
  // Through resume and the binary: the run is left as it was.
  write_file(ckpt, good);
  edit_state(ckpt, [](auto& j) { j["rng"]["dropout"][0] = "abc"; });
  const auto before = snapshot(run.dir);
  const auto o = cli("train --resume " + run.dir.string());
  CHECK(o.status == 1);
  CHECK(contains(o.text, ckpt.string()));
  CHECK(contains(o.text, "rng.dropout[0]"));
  CHECK(!contains(o.text, "stoull"));
  CHECK(snapshot(run.dir) == before);
  // The state JSON itself unreadable.
  auto file = rz::load_safetensors(ckpt.string());
  file.metadata["state"] = "{\"epoch\": 2,";
  rz::save_safetensors(ckpt.string(), file.tensors, file.metadata);
  CHECK(contains(error_message([&] { rz::read_checkpoint_state(ckpt.string()); }), "not valid JSON"));
}

TEST_CASE("run folder: a checkpoint past train.epochs is refused instead of exiting having done nothing") {
  RunCopy run(fixture().half);
  edit_state(run / "last.ckpt", [](auto& j) { j["epoch"] = 5; });
  const auto before = snapshot(run.dir);
  const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
  CHECK(contains(msg, (run / "last.ckpt").string() + " has epoch = 5 but train.epochs = 3"));
  CHECK(snapshot(run.dir) == before);
  const auto o = cli("train --resume " + run.dir.string());
  CHECK(o.status == 1);
  CHECK(contains(o.text, "epoch = 5"));
}

TEST_CASE("run folder: plain weights with any metadata load; ranzcr checkpoints are told by their own key") {
  TempDir tmp("rf_weights");
  const rz::NamedTensors w = tiny_weights();
  const std::string pt = (tmp.path() / "timm.safetensors").string(), bare = (tmp.path() / "bare.safetensors").string();
  rz::save_safetensors(pt, w, {{"format", "pt"}});
  rz::save_safetensors(bare, w);
  for (const auto& path : {pt, bare}) {
    CAPTURE(path);
    const auto back = rz::read_model_weights(path);
    REQUIRE(back.size() == w.size());
    CHECK(back[0].first == rz::load_safetensors(path).tensors[0].first);
  }
  // {"format": "pt"} as stage.init and model.pretrained of a new run.
  rz::TrainConfig c = fixture().data.config("from_pt", (tmp.path() / "runs").string(), 1);
  c.stage.init = pt;
  CHECK(rz::train(c, Logs().hooks()).epochs_run == 1);
  c.run.name = "pretrained_pt";
  c.stage.init.clear();
  c.model.pretrained = pt;
  CHECK(rz::train(c, Logs().hooks()).epochs_run == 1);
  // A ranzcr checkpoint gives its model.* part; another version is refused.
  const std::string last = (fixture().half / "last.ckpt").string();
  CHECK(rz::read_model_weights(last).size() == w.size());
  auto file = rz::load_safetensors(last);
  file.metadata["format"] = "ranzcr-checkpoint-2";
  const std::string v2 = (tmp.path() / "v2.ckpt").string();
  rz::save_safetensors(v2, file.tensors, file.metadata);
  const std::string msg = error_message([&] { rz::read_model_weights(v2); });
  CHECK(contains(msg, v2));
  CHECK(contains(msg, "another version (format 'ranzcr-checkpoint-2'"));
  CHECK(contains(error_message([&] { rz::read_checkpoint_state(pt); }), "not a ranzcr checkpoint (format 'pt')"));
}

TEST_CASE("run folder: non-finite weights are refused at load, naming the file and the tensor") {
  TempDir tmp("rf_nan");
  rz::NamedTensors w = tiny_weights();
  set_value(w, "fc.bias", std::nanf(""));
  const std::string nan_file = (tmp.path() / "nan.safetensors").string();
  rz::save_safetensors(nan_file, w);
  std::string msg = error_message([&] { rz::read_model_weights(nan_file); });
  CHECK(contains(msg, nan_file));
  CHECK(contains(msg, "tensor 'fc.bias' holds a non-finite value (nan at flat index 3"));
  // As stage.init: refused before the run writes a checkpoint.
  rz::TrainConfig c = fixture().data.config("from_nan", (tmp.path() / "runs").string(), 1);
  c.stage.init = nan_file;
  msg = error_message([&] { rz::train(c, Logs().hooks()); });
  CHECK(contains(msg, "fc.bias"));
  CHECK(!fs::exists(tmp.path() / "runs" / "from_nan" / "last.ckpt"));
  // An infinity stored as bf16.
  w = tiny_weights();
  set_value(w, "conv1.0.weight", std::numeric_limits<float>::infinity());
  const std::string inf_file = (tmp.path() / "inf.safetensors").string();
  rz::save_safetensors(inf_file, w, {}, rz::SafetensorsFloats::BF16);
  CHECK(contains(error_message([&] { rz::read_model_weights(inf_file); }), "tensor 'conv1.0.weight' holds a non-finite value (inf"));
  // In a checkpoint's optimizer state: the resume is refused, nothing changes.
  RunCopy run(fixture().half);
  auto file = rz::load_safetensors((run / "last.ckpt").string());
  std::string poisoned;
  for (auto& [n, t] : file.tensors)
    if (n.starts_with("optim.") && n.ends_with("exp_avg_sq") && poisoned.empty()) {
      t.data<float>()[0] = -std::numeric_limits<float>::infinity();
      poisoned = n;
    }
  REQUIRE(!poisoned.empty());
  rz::save_safetensors((run / "last.ckpt").string(), file.tensors, file.metadata);
  const auto before = snapshot(run.dir);
  msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
  CHECK(contains(msg, (run / "last.ckpt").string()));
  CHECK(contains(msg, "tensor '" + poisoned + "' holds a non-finite value (-inf"));
  CHECK(snapshot(run.dir) == before);
}

TEST_CASE("run folder: links planted at temporary names are never followed") {
  TempDir outside("rf_victim");
  const fs::path victim = outside.path() / "precious.txt";
  write_file(victim, "precious");
  RunCopy run(fixture().half);
  // The names earlier writers used ("<name>.tmp.<pid>", "<name>.tmp"), for
  // this process, and one of AtomicFile's own pattern.
  const std::vector<std::string> names = {"last.ckpt.tmp." + std::to_string(::getpid()),
                                          "best.ckpt.tmp." + std::to_string(::getpid()), "report.html.tmp",
                                          "config.toml.tmp", rz::atomic_temp_prefix("last.ckpt") + "AAAAAA"};
  for (const auto& n : names) fs::create_symlink(victim, run / n);
  Logs logs;
  CHECK(rz::resume(run.dir.string(), logs.hooks()).epochs_run == 1);
  CHECK(read_file(victim) == "precious");
  for (const auto& n : names) CHECK_MESSAGE(fs::is_symlink(run / n), n);
  CHECK(rz::read_checkpoint_state((run / "last.ckpt").string()).epoch == 3);
}

TEST_CASE("run folder: a metrics.jsonl or summary.csv that is a link is refused, not followed") {
  TempDir outside("rf_victim2");
  const fs::path victim = outside.path() / "victim.jsonl";
  write_file(victim, "{\"epoch\": 9}\n");
  for (const char* f : {"metrics.jsonl", "summary.csv"}) {
    CAPTURE(f);
    RunCopy run(fixture().half);
    fs::remove(run / f);
    fs::create_symlink(victim, run / f);
    const auto before = snapshot(run.dir);
    const std::string msg = error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); });
    CHECK(contains(msg, (run / f).string() + " is not a regular file"));
    CHECK(read_file(victim) == "{\"epoch\": 9}\n");
    CHECK(snapshot(run.dir) == before);
  }
}

TEST_CASE("run folder: stale temporaries of interrupted writes are removed on resume and on a fresh start") {
  RunCopy run(fixture().half);
  const std::vector<std::string> stale = {rz::atomic_temp_prefix("last.ckpt") + "Xy12Ab", "best.ckpt.tmp.4242",
                                          "config.toml.tmp", rz::atomic_temp_prefix("metrics.jsonl") + "q9Q9q9"};
  for (const auto& n : stale) write_file(run / n, std::string(100000, 'x'));
  write_file(run / "notes.tmp.txt", "mine");  // not a temporary name: kept
  rz::TrainConfig c = rz::load_config((run / "config.toml").string());
  c.train.epochs = 2;
  write_file(run / "config.toml", rz::config_to_toml(c));
  Logs logs;
  CHECK(rz::resume(run.dir.string(), logs.hooks()).epochs_run == 0);
  CHECK(logs.has("removed 4 temporary file(s) of interrupted writes"));
  for (const auto& n : stale) CHECK_MESSAGE(!fs::exists(run / n), n);
  CHECK(read_file(run / "notes.tmp.txt") == "mine");
  // A fresh start in a folder an interrupted first epoch left.
  TempDir tmp("rf_fresh");
  rz::TrainConfig f = fixture().data.config("fresh", tmp.path().string(), 1);
  fs::create_directories(tmp.path() / "fresh");
  write_file(tmp.path() / "fresh" / (rz::atomic_temp_prefix("config.toml") + "Zz00Zz"), "half");
  write_file(tmp.path() / "fresh" / "metrics.jsonl", "{\"type\":\"step\",\"epoch\":1,\"step\":2}\n{\"type\":\"st");
  Logs flogs;
  CHECK(rz::train(f, flogs.hooks()).epochs_run == 1);
  CHECK(flogs.has("removed 1 temporary file(s)"));
  std::ifstream m(tmp.path() / "fresh" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(m, l);) {
    CHECK(nlohmann::json::parse(l, nullptr, false).is_object());
    ++lines;
  }
  CHECK(lines == 3);  // steps 2 and 4, and the epoch: the stale lines are gone
}

TEST_CASE("run folder: log lines after last.ckpt and torn lines are dropped on resume; the epoch's lines appear once") {
  RunCopy run(fixture().half);
  std::ofstream(run / "metrics.jsonl", std::ios::app)
      << "{\"type\":\"step\",\"epoch\":3,\"step\":10}\n{\"type\":\"epoch\",\"epoch\":3,\"step\":12}\n{\"type\":\"ep";
  std::ofstream(run / "summary.csv", std::ios::app) << "3,0.1,0.2,0.3,0.001,1.00,,,,,,,,,,,\n3,0.1";
  Logs logs;
  CHECK(rz::resume(run.dir.string(), logs.hooks()).epochs_run == 1);
  CHECK(logs.has("resume: dropped 3 metrics.jsonl and 2 summary.csv lines written after last.ckpt (epoch 2)"));
  int epoch_lines = 0, epoch3 = 0;
  std::ifstream m(run / "metrics.jsonl");
  for (std::string l; std::getline(m, l);) {
    const auto j = nlohmann::json::parse(l, nullptr, false);
    REQUIRE(j.is_object());
    if (j["type"] == "epoch") ++epoch_lines;
    if (j["epoch"] == 3) ++epoch3;
  }
  CHECK(epoch_lines == 3);
  CHECK(epoch3 == 3);  // steps 10 and 12, and the epoch, written once by the rerun
  const std::string summary = read_file(run / "summary.csv");
  CHECK(std::count(summary.begin(), summary.end(), '\n') == 4);
  // repair_run_logs itself: later epochs only.
  const auto r = rz::repair_run_logs(run.dir.string(), 2);
  CHECK(r.history.size() == 2);
  CHECK(r.missing_epochs.empty());
}

TEST_CASE("run folder: a fresh run refuses a folder holding best.* without last.ckpt; resume needs a run folder") {
  RunCopy run(fixture().half);
  fs::remove(run / "last.ckpt");
  const auto before = snapshot(run.dir);
  rz::TrainConfig c = fixture().data.config("run", run.tmp.path().string(), 3);
  const std::string msg = error_message([&] { rz::train(c, Logs().hooks()); });
  CHECK(contains(msg, "holds best.ckpt but no last.ckpt"));
  CHECK(snapshot(run.dir) == before);
  CHECK(contains(error_message([&] { rz::resume(run.dir.string(), Logs().hooks()); }),
                 (run / "last.ckpt").string() + " is missing"));
  CHECK(contains(error_message([&] { rz::resume((run / "nothing").string(), Logs().hooks()); }), "not a folder"));
}
