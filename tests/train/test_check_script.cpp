// scripts/gpu_check.sh's output contract, checked cheaply without a GPU or a
// second build: a rehearsed dry run must leave at most 8 plain, plainly named
// files, the summary among them and printed last, with every GPU step skipped.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"
#include "tests/skip.h"

namespace fs = std::filesystem;

namespace {

using Run = rz::test::CommandOutput;
using rz::test::run_command;

Run run_script(const std::string& args) {
  return run_command("bash " + std::string(RZ_SOURCE_DIR) + "/scripts/gpu_check.sh " + args);
}

}  // namespace

TEST_CASE("scripts: gpu_check.sh --rehearse --dry-run keeps the output contract") {
  const rz::test::TempDir tmp("gpu_check");
  const fs::path out = tmp.path() / "out";
  const Run r = run_script("--rehearse --dry-run --out " + out.string() + " --build-dir " +
                           (tmp.path() / "build").string() + " --bundle " +
                           (tmp.path() / "no-bundle").string());
  INFO(r.text);
  CHECK(r.status == 0);

  // At most 8 plain files, named with letters, digits, '.', '_' and '-'.
  int files = 0;
  const std::regex plain("[A-Za-z0-9._-]+");
  for (const auto& e : fs::directory_iterator(out)) {
    ++files;
    CAPTURE(e.path().filename().string());
    CHECK(e.is_regular_file());
    CHECK(std::regex_match(e.path().filename().string(), plain));
  }
  CHECK(files <= 8);
  for (const char* name : {"gpu_check.log", "summary.md", "headline.json", "steps.tar.gz"})
    CHECK_MESSAGE(fs::exists(out / name), name);

  // The summary is the last thing printed, within the last 12,000 characters.
  const std::string summary = rz::test::read_file(out / "summary.md");
  REQUIRE(!summary.empty());
  const std::string tail = r.text.size() > 12000 ? r.text.substr(r.text.size() - 12000) : r.text;
  CHECK(tail.find(summary) != std::string::npos);
  CHECK(summary.find("- result: PASS") != std::string::npos);
  CHECK(summary.find("- tests: 0 passed, 0 failed, 0 skipped") != std::string::npos);

  // Every step after the preflight was skipped, and the JSON says so.
  const nlohmann::json j = nlohmann::json::parse(rz::test::read_file(out / "headline.json"));
  CHECK(j["result"] == "PASS");
  CHECK(j["rehearsal"] == true);
  REQUIRE(j["steps"].is_object());
  CHECK(j["steps"]["preflight"]["result"] == "PASS");
  for (const char* s : {"build-tests", "gpu-tests", "memcheck", "conv_bench", "train_step-bf16",
                        "racecheck", "train_step-fp32-b8"}) {
    CAPTURE(s);
    REQUIRE(j["steps"].contains(s));
    CHECK(j["steps"][s]["result"].get<std::string>().rfind("SKIPPED", 0) == 0);
  }
  // The main log is the whole output.
  CHECK(rz::test::read_file(out / "gpu_check.log").find("=== [preflight]") != std::string::npos);
}

TEST_CASE("scripts: gpu_check.sh refuses bad usage with exit status 2") {
  const Run no_out = run_script("--rehearse");
  CHECK(no_out.status == 2);
  CHECK(no_out.text.find("--out DIR is required") != std::string::npos);
  const Run bad = run_script("--out /nonexistent/x --frobnicate");
  CHECK(bad.status == 2);
  CHECK(bad.text.find("unknown argument '--frobnicate'") != std::string::npos);
}

TEST_CASE("scripts: a test case that skips makes the test process exit 77, which ctest reports Skipped") {
  const auto self = [](const std::string& args) {
    return run_command("/proc/" + std::to_string(::getpid()) + "/exe " + args);
  };
#if defined(RZ_HAVE_CUDA)  // a build without CUDA has no GPU test cases to run
  const Run gpu = self("--test-case=\"gpu: SE channel scale matches the CPU twin\"");
  INFO(gpu.text);
  if (rz::cuda_device_count() == 0) {
    CHECK(gpu.status == rz::test::kSkipReturnCode);
    CHECK(gpu.text.find("[skipped] 'gpu: SE channel scale matches the CPU twin': no CUDA device") !=
          std::string::npos);
  } else {
    CHECK(gpu.status == 0);
  }
  // A run that also passes a test is not "skipped": the skip is reported, the status is 0.
  const Run mixed = self("--test-case=\"gpu: SE channel scale matches the CPU twin,forward: linear by hand\"");
  CHECK(mixed.status == 0);
#endif
  const Run none = self("--test-case=\"no such test case\"");
  CHECK(none.status == 0);
}
