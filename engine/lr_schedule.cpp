#include "engine/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "engine/error.h"

namespace rz {

void check_schedule(const LrSchedule& s) {
  RZ_CHECK(s.warmup_steps >= 0, "lr schedule: warmup_steps must be >= 0, got ", s.warmup_steps);
  switch (s.kind) {
    case LrSchedule::Kind::constant:
      break;
    case LrSchedule::Kind::step:
      RZ_CHECK(s.step_size > 0, "lr schedule: step_size must be > 0, got ", s.step_size);
      break;
    case LrSchedule::Kind::multistep:
      RZ_CHECK(std::is_sorted(s.milestones.begin(), s.milestones.end()),
               "lr schedule: multistep milestones must be ascending");
      break;
    case LrSchedule::Kind::cosine: {
      const int64_t decay_start = s.warmup_prefix ? s.warmup_steps : 0;
      RZ_CHECK(s.total_steps > decay_start, "lr schedule: cosine total_steps (", s.total_steps,
               ") must exceed ", s.warmup_prefix ? "warmup_steps (" : "0 (", decay_start, ")");
      break;
    }
  }
}

double lr_at(const LrSchedule& s, int64_t step) {
  RZ_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step);
  check_schedule(s);

  if (step < s.warmup_steps) {
    // timm: the increment is computed first, then scaled by the step.
    const double increment = (s.base_lr - s.warmup_init_lr) / static_cast<double>(s.warmup_steps);
    return s.warmup_init_lr + static_cast<double>(step) * increment;
  }
  const int64_t t = s.warmup_prefix ? step - s.warmup_steps : step;

  switch (s.kind) {
    case LrSchedule::Kind::constant:
      return s.base_lr;
    case LrSchedule::Kind::step:
      return s.base_lr * std::pow(s.gamma, static_cast<double>(t / s.step_size));
    case LrSchedule::Kind::multistep: {
      const auto passed =
          std::upper_bound(s.milestones.begin(), s.milestones.end(), t) - s.milestones.begin();
      return s.base_lr * std::pow(s.gamma, static_cast<double>(passed));
    }
    case LrSchedule::Kind::cosine: {
      const int64_t t_initial = s.total_steps - (s.warmup_prefix ? s.warmup_steps : 0);
      if (t >= t_initial) return s.min_lr;
      const double phase =
          std::numbers::pi * static_cast<double>(t) / static_cast<double>(t_initial);
      return s.min_lr + 0.5 * (s.base_lr - s.min_lr) * (1.0 + std::cos(phase));
    }
  }
  RZ_THROW("lr schedule: unknown kind ", static_cast<int>(s.kind));
}

LrSchedule::Kind parse_schedule_kind(std::string_view name) {
  using Kind = LrSchedule::Kind;
  for (Kind k : {Kind::constant, Kind::step, Kind::multistep, Kind::cosine})
    if (name == schedule_kind_name(k)) return k;
  RZ_THROW("unknown lr schedule '", name, "' (expected one of: constant, step, multistep, cosine)");
}

std::string_view schedule_kind_name(LrSchedule::Kind kind) {
  switch (kind) {
    case LrSchedule::Kind::constant:
      return "constant";
    case LrSchedule::Kind::step:
      return "step";
    case LrSchedule::Kind::multistep:
      return "multistep";
    case LrSchedule::Kind::cosine:
      return "cosine";
  }
  return "unknown";
}

}  // namespace rz
