// The doctest runner. Besides doctest's own result it tells ctest when a
// process only skipped: if every test case it ran called rz::test::skip and
// none failed, it exits with kSkipReturnCode (ctest: "Skipped"), so a test
// that could not run here is never counted as passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "tests/skip.h"

namespace {

std::mutex g_mutex;
std::set<std::string> g_started;  // test cases this process entered
std::set<std::string> g_skipped;  // of those, the ones that skipped

// Counts the test cases that start; everything else is left to doctest's
// console reporter.
struct StartedListener : doctest::IReporter {
  explicit StartedListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData& tc) override {
    const std::lock_guard<std::mutex> lock(g_mutex);
    g_started.insert(tc.m_name);
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("rz_started", 1, StartedListener);

namespace rz::test {

void skip(const char* why) {
  const char* name = doctest::getContextOptions()->currentTest->m_name;
  std::printf("[skipped] '%s': %s\n", name, why);
  std::fflush(stdout);
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_skipped.insert(name);
}

}  // namespace rz::test

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  const std::lock_guard<std::mutex> lock(g_mutex);
  const bool all_skipped = !g_started.empty() && g_skipped.size() == g_started.size();
  if (rc == 0 && all_skipped) {
    std::printf("[skipped] all %zu test case(s) of this run skipped\n", g_skipped.size());
    return rz::test::kSkipReturnCode;
  }
  if (!g_skipped.empty()) std::printf("[skipped] %zu test case(s) skipped\n", g_skipped.size());
  return rc;
}
