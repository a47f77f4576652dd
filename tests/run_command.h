// Runs a shell command line for a test: its exit status and everything it
// printed (stdout and stderr together).
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace rz::test {

struct CommandOutput {
  int status = -1;   // the exit status; -1 when the command did not exit normally
  std::string text;  // stdout and stderr together
};

inline CommandOutput run_command(const std::string& cmd) {
  CommandOutput out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.text.append(buf.data(), n);
  const int st = ::pclose(p);
  out.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

}  // namespace rz::test
