#include "engine/fault.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace rz {
namespace {

std::atomic<int64_t> g_armed_after{-1};  // -1: not yet read from the environment; 0: disarmed
std::atomic<int64_t> g_passed{0};
std::atomic<bool> g_log{false};
std::once_flag g_env_once;

void read_environment() {
  std::call_once(g_env_once, [] {
    int64_t n = 0;
    if (const char* v = std::getenv("RZ_FAULT_AFTER")) {
      char* end = nullptr;
      const long long parsed = std::strtoll(v, &end, 10);
      if (end != v && *end == '\0' && parsed > 0) n = parsed;
    }
    if (const char* v = std::getenv("RZ_FAULT_LOG")) g_log = std::string(v) == "1";
    int64_t expected = -1;
    g_armed_after.compare_exchange_strong(expected, n);
  });
}

bool active() {
  int64_t armed = g_armed_after.load(std::memory_order_relaxed);
  if (armed < 0) {
    read_environment();
    armed = g_armed_after.load();
  }
  return armed > 0 || g_log.load(std::memory_order_relaxed);
}

}  // namespace

void fault_point(std::string_view step, std::string_view subject) {
  if (!active()) return;
  std::string name(step);
  name += ' ';
  name += subject;
  fault_point(std::string_view(name));
}

void fault_point(std::string_view name) {
  if (!active()) return;
  const int64_t armed = g_armed_after.load();
  const int64_t k = g_passed.fetch_add(1) + 1;
  if (g_log.load(std::memory_order_relaxed))
    std::fprintf(stderr, "fault point %lld: %.*s\n", static_cast<long long>(k),
                 static_cast<int>(name.size()), name.data());
  if (armed > 0 && k == armed) {
    std::fprintf(stderr, "fault point %lld (%.*s): stopping the process\n", static_cast<long long>(k),
                 static_cast<int>(name.size()), name.data());
    std::_Exit(kFaultExitCode);
  }
}

void arm_fault_after(int64_t n) {
  read_environment();
  g_passed = 0;
  g_armed_after = n > 0 ? n : 0;
}

int64_t fault_points_passed() { return g_passed.load(); }

}  // namespace rz
