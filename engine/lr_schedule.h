// Learning-rate schedules as plain values: a schedule is its description, and
// lr_at(schedule, step) is a pure function of it, so resuming from a
// checkpoint needs only the description and the step count (no hidden state
// to replay).
//
// `step` is the 0-based optimizer-step index: lr_at(s, k) is the rate used by
// the k-th update. All step counts are in optimizer steps; a trainer that
// thinks in epochs multiplies by updates per epoch, like timm's
// `t_in_epochs=False` mode.
//
// Conventions follow timm's schedulers exactly (timm/scheduler/*.py):
//
// Warmup (every kind), for step < warmup_steps:
//   lr = warmup_init_lr + step * (base_lr - warmup_init_lr) / warmup_steps
// so step 0 uses warmup_init_lr and the last warmup step is one increment
// short of base_lr; base_lr is first reached at step == warmup_steps.
//
// After warmup, let t = warmup_prefix ? step - warmup_steps : step.
//   constant:  base_lr
//   step:      base_lr * gamma^floor(t / step_size)        (timm StepLRScheduler;
//              torch StepLR stepped per step)
//   multistep: base_lr * gamma^(number of milestones <= t) (timm MultiStepLRScheduler,
//              torch MultiStepLR); milestones ascending
//   cosine:    timm CosineLRScheduler with cycle_limit 1, cycle_mul 1, k_decay 1,
//              no noise, and t_initial = total_steps - (warmup_prefix ? warmup_steps : 0):
//                lr = min_lr + 0.5*(base_lr - min_lr)*(1 + cos(pi * t / t_initial))
//              for t < t_initial, and min_lr from step total_steps on.
//              With warmup_prefix (our default) this is
//                min_lr + 0.5*(base_lr - min_lr)*(1 + cos(pi*(step-warmup)/(total-warmup)))
//              starting exactly at base_lr after warmup. With warmup_prefix false
//              (timm's cosine default, `--warmup-prefix` unset in train.py) the cosine
//              runs from step 0 and warmup overrides its first warmup_steps values.
//              Either way total_steps is the step at which lr reaches min_lr.
// timm's StepLR/MultiStepLR default warmup_prefix to true, its cosine to false;
// here the one flag applies to every kind and defaults to true.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace rz {

struct LrSchedule {
  enum class Kind { constant, step, multistep, cosine };

  Kind kind = Kind::constant;
  double base_lr = 0.0;

  int64_t warmup_steps = 0;  // 0: no warmup.
  double warmup_init_lr = 0.0;
  bool warmup_prefix = true;  // decay clock starts after warmup (see above).

  // step
  int64_t step_size = 1;  // > 0
  double gamma = 0.1;     // step and multistep decay factor
  // multistep: ascending decay points, in steps of t (after the prefix shift).
  std::vector<int64_t> milestones{};

  // cosine
  int64_t total_steps = 0;  // step at which lr reaches min_lr
  double min_lr = 0.0;
};

// The learning rate for 0-based optimizer step `step`. Throws rz::Error when
// step < 0 or the schedule is invalid (see check_schedule).
double lr_at(const LrSchedule& schedule, int64_t step);

// Throws rz::Error naming the offending field when the schedule cannot be
// evaluated: negative warmup, step_size <= 0, unsorted milestones, or a cosine
// with no decay phase (total_steps <= warmup_steps with warmup_prefix, or
// total_steps <= 0 without).
void check_schedule(const LrSchedule& schedule);

// "constant", "step", "multistep", "cosine"; anything else throws rz::Error
// quoting the value.
LrSchedule::Kind parse_schedule_kind(std::string_view name);
std::string_view schedule_kind_name(LrSchedule::Kind kind);

}  // namespace rz
