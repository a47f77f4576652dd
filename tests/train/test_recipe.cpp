// The README's real-data recipe, end to end, on a tiny synthetic set: every
// `ranzcr` line between <!-- recipe:begin --> and <!-- recipe:end --> runs
// as written, with the repository's configs/, in a folder laid out like the
// recipe's (data/ranzcr, cache/, runs/). What changes is only the size:
// `--size 640` becomes `--size 48`, and each `ranzcr train` gets overrides
// for a small model on the CPU (appended `--set`, later keys win). Lines
// that need the network (kaggle, tools/export_timm.py) are not run: the
// data comes from `ranzcr synth`, and the pretrained file the export would
// write is a timm-format ImageNet file of the small model
// (tests/fixtures/pretrained/seresnet_tiny_in1k.safetensors, 1000 classes),
// put where the recipe's teacher config looks for it.
//
// Then: the submission has the sample_submission's format and order, and
// predicting the validation fold's images and scoring them gives the table
// `ranzcr eval` printed.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/csv.h"
#include "data/ranzcr_csv.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"

namespace fs = std::filesystem;
using rz::test::CommandOutput;
using rz::test::contains;
using rz::test::read_file;
using rz::test::run_command;
using rz::test::TempDir;

namespace {

// The `ranzcr` command lines of the README's recipe block, in order.
std::vector<std::string> recipe_lines() {
  const std::string readme = read_file(fs::path(RZ_SOURCE_DIR) / "README.md");
  const auto begin = readme.find("<!-- recipe:begin -->");
  const auto end = readme.find("<!-- recipe:end -->");
  REQUIRE(begin != std::string::npos);
  REQUIRE(end != std::string::npos);
  std::istringstream block(readme.substr(begin, end - begin));
  std::vector<std::string> lines;
  for (std::string line; std::getline(block, line);)
    if (line.rfind("ranzcr ", 0) == 0) lines.push_back(line);
  return lines;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// The table lines of an AUC printout ("  <label>  0.1234" ... "mean AUC"), without the header line.
std::string auc_table(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("  ", 0) == 0) out += line + "\n";
  return out;
}

}  // namespace

TEST_CASE("recipe: the README's real-data recipe runs end to end on a tiny synthetic set") {
  const std::vector<std::string> lines = recipe_lines();
  // prep, four stages, eval, predict: the recipe is all there.
  REQUIRE(lines.size() == 7);
  const TempDir work("recipe");
  const std::string cli = RZ_CLI_PATH;
  auto run = [&](const std::string& args) {
    const CommandOutput o = run_command("cd '" + work.path().string() + "' && '" + cli + "' " + args);
    INFO(args);
    INFO(o.text);
    REQUIRE(o.status == 0);
    return o.text;
  };
  run("synth --out data/ranzcr --n 80 --n-test 12 --size 64 --seed 5 --difficulty 0.2 --threads 2");
  fs::copy(fs::path(RZ_SOURCE_DIR) / "configs", work.path() / "configs", fs::copy_options::recursive);
  fs::create_directories(work.path() / "weights");
  fs::copy_file(fs::path(RZ_FIXTURES_DIR) / "pretrained/seresnet_tiny_in1k.safetensors",
                work.path() / "weights/seresnet152d_imagenet.safetensors");

  const std::string small =
      " --set model.name=seresnet_tiny --set model.img_size=32 --set train.epochs=1"
      " --set train.batch=8 --set run.device=cpu --set run.precision=fp32 --set run.threads=2 --set data.workers=2";
  std::string eval_output;
  for (const std::string& line : lines) {
    std::string args = replace_all(line.substr(std::string("ranzcr ").size()), "--size 640", "--size 48");
    if (args.rfind("train ", 0) == 0) args += small;
    const std::string out = run(args);
    if (args.rfind("eval ", 0) == 0) eval_output = out;
    // The teacher starts from the ImageNet file: loaded, its 1000-class head replaced.
    if (args.find("seed_512_1_teacher") != std::string::npos)
      CHECK(contains(out, "pretrained weights/seresnet152d_imagenet.safetensors: fc.weight, fc.bias dropped"));
  }

  // The submission: sample_submission's header and order, 11 probabilities a row.
  const rz::CsvTable sub = rz::read_csv((work.path() / "submission.csv").string());
  const std::vector<std::string> want =
      rz::read_ranzcr_sample_submission((work.path() / "data/ranzcr/sample_submission.csv").string());
  REQUIRE(sub.header.size() == 12);
  CHECK(sub.header[0] == "StudyInstanceUID");
  for (size_t k = 0; k < rz::kRanzcrLabels.size(); ++k) CHECK(sub.header[k + 1] == rz::kRanzcrLabels[k]);
  REQUIRE(sub.rows.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(sub.rows[i].fields[0] == want[i]);
    for (size_t k = 1; k <= rz::kRanzcrLabels.size(); ++k) {
      const float p = std::stof(sub.rows[i].fields[k]);
      CHECK(p >= 0.0f);
      CHECK(p <= 1.0f);
    }
  }

  // The validation fold through predict + score gives eval's table.
  const rz::CsvTable oof = rz::read_csv((work.path() / "runs/seed512_finetune/oof.csv").string());
  REQUIRE(oof.rows.size() >= 8);
  std::string sample = "StudyInstanceUID";
  for (const auto& l : rz::kRanzcrLabels) sample += "," + std::string(l);
  sample += "\n";
  std::string truth;
  {
    std::istringstream train(read_file(work.path() / "data/ranzcr/train.csv"));
    std::string header;
    std::getline(train, header);
    truth = header + "\n";
    std::vector<std::string> rows;
    for (std::string line; std::getline(train, line);) rows.push_back(line);
    for (const auto& r : oof.rows) {
      sample += r.fields[0] + ",0,0,0,0,0,0,0,0,0,0,0\n";
      for (const auto& line : rows)
        if (line.rfind(r.fields[0] + ",", 0) == 0) truth += line + "\n";
    }
  }
  work.write("val_sample.csv", sample);
  work.write("val_truth.csv", truth);
  run("predict --run runs/seed512_finetune --images data/ranzcr/train --sample-submission val_sample.csv "
      "--out val.csv");
  const std::string scored = run("score --pred val.csv --truth val_truth.csv");
  const std::string table = auc_table(eval_output);
  CHECK(contains(table, "mean AUC"));
  CHECK(auc_table(scored) == table);
  // The out-of-fold file eval wrote scores the same.
  CHECK(auc_table(run("score --pred runs/seed512_finetune/oof.csv --truth val_truth.csv")) == table);
}
