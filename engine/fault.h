// Fault injection for crash-consistency tests. Code that writes durable state
// calls fault_point("name") between its file operations (engine/atomic_file.cpp,
// the trainer's checkpoint sequence). Disarmed, a fault point is one relaxed
// atomic load. Armed, the Nth point reached (counting from 1) ends the
// process at once with _exit(kFaultExitCode), as a kill would: no destructor,
// no flush, no cleanup runs.
//
// Arming: arm_fault_after(n) in a test process (arm_fault_after(INT64_MAX)
// only counts: fault_points_passed() then says how many points a run has),
// or the environment variable RZ_FAULT_AFTER=N, read at the first fault
// point, so a CLI run can be stopped at its Nth file operation. RZ_FAULT_LOG=1 prints each point
// ("fault point 7: rename checkpoint last.ckpt") to stderr, to map N to a step.
#pragma once

#include <cstdint>
#include <string_view>

namespace rz {

inline constexpr int kFaultExitCode = 86;

void fault_point(std::string_view name);
// The same, naming the point "<step> <subject>" (formatted only when armed).
void fault_point(std::string_view step, std::string_view subject);
void arm_fault_after(int64_t n);  // n <= 0 disarms
int64_t fault_points_passed();    // points reached since the process started or the last arm
}  // namespace rz
