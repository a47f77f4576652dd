// Honest skips. A test that cannot run here (no CUDA device, a kernel this
// build or device lacks) calls RZ_SKIP_TEST(why): it prints one line and
// returns, and the test is recorded as skipped, not passed. When every test
// case a process ran skipped, tests/main.cpp exits with kSkipReturnCode,
// which ctest reports as "Skipped" (SKIP_RETURN_CODE in CMakeLists.txt).
#pragma once

namespace rz::test {

constexpr int kSkipReturnCode = 77;

// Records the current test case as skipped and prints
// "[skipped] '<test case>': <why>".
void skip(const char* why);

}  // namespace rz::test

#define RZ_SKIP_TEST(why)      \
  do {                         \
    ::rz::test::skip(why);     \
    return;                    \
  } while (0)
