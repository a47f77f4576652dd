// Kill tests of the run folder: a tiny training run (tests/train/tiny_run.h)
// is stopped as a kill would stop it (RZ_FAULT_AFTER=k: the k-th fault point
// _exits the `ranzcr` process, engine/fault.h) at points covering every
// step of an epoch's save sequence (its log lines, each file operation of
// last.ckpt, best.ckpt, best.safetensors and report.html), the config
// write, and training steps; then resumed (some resumes killed again) until
// it completes. After every stop the best model must still be recoverable,
// and each time the folder must end exactly as an uninterrupted run's: the
// same last.ckpt, best.ckpt and best.safetensors bytes, the same
// metrics.jsonl and summary.csv apart from timings, and no temporary file.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/fault.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"
#include "tests/train/tiny_run.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using rz::test::read_file;
using rz::test::run_command;

namespace {

// metrics.jsonl lines without their wall-time fields.
std::vector<std::string> metrics_without_timings(const fs::path& p) {
  std::vector<std::string> out;
  std::istringstream in(read_file(p));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      out.push_back("unreadable: " + line);
      continue;
    }
    j.erase("seconds");
    j.erase("images_per_s");
    out.push_back(j.dump());
  }
  return out;
}

// summary.csv without its 6th column (seconds).
std::vector<std::string> summary_without_seconds(const fs::path& p) {
  std::vector<std::string> out;
  std::istringstream in(read_file(p));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    if (cells.size() > 5) cells.erase(cells.begin() + 5);
    std::string joined;
    for (const auto& c : cells) joined += c + ",";
    out.push_back(joined);
  }
  return out;
}

std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos) out.push_back(name);
  }
  return out;
}

void check_same_as_reference(const fs::path& run, const fs::path& ref, const std::string& what) {
  INFO(what);
  for (const char* f : {"last.ckpt", "best.ckpt", "best.safetensors"}) {
    REQUIRE_MESSAGE(fs::exists(run / f), std::string(f), " is missing");
    CHECK_MESSAGE(read_file(run / f) == read_file(ref / f), std::string(f), " differs from the uninterrupted run's");
  }
  CHECK(rz::read_checkpoint_state((run / "best.ckpt").string()).best_epoch ==
        rz::read_checkpoint_state((ref / "best.ckpt").string()).best_epoch);
  CHECK(metrics_without_timings(run / "metrics.jsonl") == metrics_without_timings(ref / "metrics.jsonl"));
  CHECK(summary_without_seconds(run / "summary.csv") == summary_without_seconds(ref / "summary.csv"));
  CHECK(fs::exists(run / "report.html"));
  CHECK(temporaries(run).empty());
}

// What a kill may leave must still hold every best model: when last.ckpt's
// best epoch is older than its epoch, best.ckpt holds it (a best epoch equal
// to last.ckpt's own is rewritten from last.ckpt by the resume).
void check_best_recoverable(const fs::path& run, const std::string& what) {
  if (!fs::exists(run / "last.ckpt")) return;
  const rz::TrainState st = rz::read_checkpoint_state((run / "last.ckpt").string());
  if (st.best_epoch < 1 || st.best_epoch == st.epoch) return;
  INFO(what);
  REQUIRE(fs::exists(run / "best.ckpt"));
  const rz::TrainState best = rz::read_checkpoint_state((run / "best.ckpt").string());
  CHECK(best.best_epoch == st.best_epoch);
  CHECK(best.epoch == st.best_epoch);
}

struct Point {
  int64_t index;
  std::string name;
};

// The fault points a run passes, from its RZ_FAULT_LOG=1 output.
std::vector<Point> parse_points(const std::string& text) {
  std::vector<Point> out;
  const std::regex re("^fault point ([0-9]+): (.*)$");
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, re)) out.push_back({std::stoll(m[1]), m[2]});
  }
  return out;
}

// Which points to stop at: every step of the first epoch's save sequence
// (of each run of per-tensor writes the first and the last), the steps
// after the final epoch's last.ckpt is renamed (the run is complete but
// best.* lag), part of the second epoch's sequence (a non-best epoch), the
// config write, and training steps.
std::vector<int64_t> choose_points(const std::vector<Point>& points) {
  std::vector<int64_t> ks;
  // Sequences: from an "epoch files metrics.jsonl" to the next "train step".
  std::vector<std::pair<size_t, size_t>> seqs;
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i].name != "epoch files metrics.jsonl") continue;
    size_t j = i;
    while (j < points.size() && points[j].name != "train step") ++j;
    seqs.emplace_back(i, j);
  }
  REQUIRE(seqs.size() == 3);
  auto is_write = [&](size_t i) { return points[i].name.starts_with("write safetensors"); };
  // Epoch 1: all of it.
  for (size_t i = seqs[0].first; i < seqs[0].second; ++i) {
    if (!is_write(i)) {
      ks.push_back(points[i].index);
      continue;
    }
    size_t j = i;
    while (j + 1 < seqs[0].second && is_write(j + 1)) ++j;
    ks.push_back(points[i].index);
    ks.push_back(points[j].index);
    i = j;
  }
  // Epoch 2 (not a best epoch): its log lines, last.ckpt, report.
  for (size_t i = seqs[1].first; i < seqs[1].second; ++i)
    if (points[i].name.starts_with("epoch files") || points[i].name == "rename safetensors file last.ckpt")
      ks.push_back(points[i].index);
  // Epoch 3, after the run's final commit (the rename of last.ckpt): the
  // resume has no epoch left to train, only best.* to bring up to date.
  for (size_t i = seqs[2].first; i < seqs[2].second; ++i)
    if (points[i].name.starts_with("epoch files best") || points[i].name.starts_with("rename") ||
        points[i].name == "fsync the folder of safetensors file last.ckpt")
      ks.push_back(points[i].index);
  // The config write, and a training step in epochs 1 and 2.
  for (size_t i = 0; i < points.size() && points[i].name != "train step"; ++i)
    if (points[i].name == "create file config.toml" || points[i].name == "rename file config.toml")
      ks.push_back(points[i].index);
  int steps = 0;
  for (const auto& p : points)
    if (p.name == "train step" && (++steps == 1 || steps == 7)) ks.push_back(p.index);
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

}  // namespace

TEST_CASE("kill: a run stopped at any step of its epoch files and resumed ends as an uninterrupted run") {
  const rz::test::TinyRunData data;
  const rz::test::TempDir work("kill");
  const fs::path runs = work.path() / "runs", run = runs / "k", ref = work.path() / "reference";
  const std::string cfg = work.write("run.toml", data.toml("k", runs.string()));
  const std::string cli = RZ_CLI_PATH;

  const auto first = run_command("RZ_FAULT_LOG=1 " + cli + " train --config " + cfg);
  REQUIRE_MESSAGE(first.status == 0, first.text);
  const std::vector<Point> points = parse_points(first.text);
  REQUIRE(!points.empty());
  for (size_t i = 0; i < points.size(); ++i) REQUIRE(points[i].index == static_cast<int64_t>(i + 1));
  // The reference files: epochs 1 and 3 best, 2 not.
  fs::rename(run, ref);
  REQUIRE(rz::read_checkpoint_state((ref / "best.ckpt").string()).best_epoch == 3);
  REQUIRE(temporaries(ref).empty());

  const std::vector<int64_t> ks = choose_points(points);
  MESSAGE(ks.size(), " kill points of ", points.size());
  int chained = 0;
  for (size_t n = 0; n < ks.size(); ++n) {
    const int64_t k = ks[n];
    const std::string what = "stopped at fault point " + std::to_string(k) + " (" +
                             points[static_cast<size_t>(k - 1)].name + ")";
    fs::remove_all(runs);
    const auto killed = run_command("RZ_FAULT_AFTER=" + std::to_string(k) + " " + cli + " train --config " + cfg);
    CHECK_MESSAGE(killed.status == rz::kFaultExitCode, what, ": ", killed.text);
    check_best_recoverable(run, what);
    // Every fourth interruption is followed by a resume that is itself
    // stopped, at its 1st, 3rd, 40th, ... point.
    std::vector<int64_t> again;
    if (n % 4 == 1) again = {static_cast<int64_t>(1 + (n * 37) % 200)};
    if (n % 8 == 3) again = {3, 150};
    int rounds = 0;
    for (; rounds < 6; ++rounds) {
      const bool committed = fs::exists(run / "last.ckpt");
      std::string cmd = committed ? cli + " train --resume " + run.string() : cli + " train --config " + cfg;
      const bool stop = static_cast<size_t>(rounds) < again.size();
      if (stop) cmd = "RZ_FAULT_AFTER=" + std::to_string(again[static_cast<size_t>(rounds)]) + " " + cmd;
      const auto o = run_command(cmd);
      if (o.status == 0 && !stop) break;
      if (o.status == 0) continue;  // finished before its stop point
      CHECK_MESSAGE(o.status == rz::kFaultExitCode, what, ", round ", rounds, ": ", o.text);
      if (o.status != rz::kFaultExitCode) break;
      check_best_recoverable(run, what + ", stopped again in round " + std::to_string(rounds));
      chained += stop;
    }
    REQUIRE_MESSAGE(rounds < 6, what, ": the run did not complete");
    check_same_as_reference(run, ref, what);
  }
  CHECK(chained > 0);
}
