// Learning-rate schedules against values worked out by hand from timm's
// scheduler formulas (timm/scheduler/{step,multistep,cosine}_lr.py).
#include <doctest/doctest.h>

#include <string>

#include "engine/error.h"
#include "engine/lr_schedule.h"

using rz::LrSchedule;

namespace {
doctest::Approx lr(double x) {
  return doctest::Approx(x).epsilon(1e-12);
}
}  // namespace

TEST_CASE("lr schedule: constant, with and without warmup") {
  LrSchedule s{.kind = LrSchedule::Kind::constant, .base_lr = 0.1};
  CHECK(rz::lr_at(s, 0) == lr(0.1));
  CHECK(rz::lr_at(s, 1000000) == lr(0.1));

  // warmup 5 from 0: lr = step*0.1/5 = 0.02*step for step < 5, then 0.1.
  s.warmup_steps = 5;
  CHECK(rz::lr_at(s, 0) == lr(0.0));
  CHECK(rz::lr_at(s, 1) == lr(0.02));
  CHECK(rz::lr_at(s, 4) == lr(0.08));  // last warmup step stops one increment short
  CHECK(rz::lr_at(s, 5) == lr(0.1));
  CHECK(rz::lr_at(s, 99) == lr(0.1));
}

TEST_CASE("lr schedule: step") {
  // base 0.1, gamma 0.5 every 3 steps: 0.1 * 0.5^floor(step/3).
  LrSchedule s{.kind = LrSchedule::Kind::step, .base_lr = 0.1, .step_size = 3, .gamma = 0.5};
  CHECK(rz::lr_at(s, 0) == lr(0.1));
  CHECK(rz::lr_at(s, 2) == lr(0.1));
  CHECK(rz::lr_at(s, 3) == lr(0.05));
  CHECK(rz::lr_at(s, 5) == lr(0.05));
  CHECK(rz::lr_at(s, 6) == lr(0.025));
  CHECK(rz::lr_at(s, 9) == lr(0.0125));

  SUBCASE("warmup prefix shifts the decay clock") {
    // warmup 2 from 0.01: increment (0.1-0.01)/2 = 0.045; step 0 -> 0.01, step 1 -> 0.055.
    // Then t = step - 2: steps 2..4 -> 0.1, 5..7 -> 0.05.
    s.warmup_steps = 2;
    s.warmup_init_lr = 0.01;
    CHECK(rz::lr_at(s, 0) == lr(0.01));
    CHECK(rz::lr_at(s, 1) == lr(0.055));
    CHECK(rz::lr_at(s, 2) == lr(0.1));
    CHECK(rz::lr_at(s, 4) == lr(0.1));
    CHECK(rz::lr_at(s, 5) == lr(0.05));
    CHECK(rz::lr_at(s, 8) == lr(0.025));
  }
  SUBCASE("without the prefix the decay counts from step 0") {
    // t = step: step 2 -> 0.1, step 3 -> 0.05, as if warmup were not there.
    s.warmup_steps = 2;
    s.warmup_init_lr = 0.01;
    s.warmup_prefix = false;
    CHECK(rz::lr_at(s, 1) == lr(0.055));
    CHECK(rz::lr_at(s, 2) == lr(0.1));
    CHECK(rz::lr_at(s, 3) == lr(0.05));
  }
}

TEST_CASE("lr schedule: multistep") {
  // milestones {2, 5}, gamma 0.1: a decay applies once step >= milestone
  // (bisect_right): 0,1 -> 1;  2..4 -> 0.1;  5.. -> 0.01.
  LrSchedule s{
      .kind = LrSchedule::Kind::multistep, .base_lr = 1.0, .gamma = 0.1, .milestones = {2, 5}};
  CHECK(rz::lr_at(s, 0) == lr(1.0));
  CHECK(rz::lr_at(s, 1) == lr(1.0));
  CHECK(rz::lr_at(s, 2) == lr(0.1));
  CHECK(rz::lr_at(s, 4) == lr(0.1));
  CHECK(rz::lr_at(s, 5) == lr(0.01));
  CHECK(rz::lr_at(s, 100) == lr(0.01));
}

TEST_CASE("lr schedule: cosine with warmup") {
  // base 0.1, min 0.01, warmup 4 steps from 0.001, total 24 -> cosine over t_initial = 20.
  // Warmup increment = (0.1 - 0.001)/4 = 0.02475.
  // Cosine: 0.01 + 0.045*(1 + cos(pi*t/20)), t = step - 4.
  LrSchedule s{.kind = LrSchedule::Kind::cosine,
               .base_lr = 0.1,
               .warmup_steps = 4,
               .warmup_init_lr = 0.001,
               .total_steps = 24,
               .min_lr = 0.01};
  CHECK(rz::lr_at(s, 0) == lr(0.001));    // warmup_init_lr
  CHECK(rz::lr_at(s, 1) == lr(0.02575));  // 0.001 + 0.02475
  CHECK(rz::lr_at(s, 3) == lr(0.07525));  // last warmup step: 0.001 + 3*0.02475
  CHECK(rz::lr_at(s, 4) == lr(0.1));      // first cosine step: t=0, cos 0 = 1 -> base
  // t=1: cos(pi/20) = 0.9876883405951378 -> 0.01 + 0.045*1.9876883405951378
  CHECK(rz::lr_at(s, 5) == lr(0.09944597532678119));
  CHECK(rz::lr_at(s, 14) == lr(0.055));  // midpoint t=10: cos(pi/2) = 0 -> (0.1+0.01)/2
  // t=15: cos(3pi/4) = -0.7071067811865476 -> 0.01 + 0.045*0.2928932188134524
  CHECK(rz::lr_at(s, 19) == lr(0.023180194846605363));
  // t=19 (last step before the end): cos(19pi/20) = -0.9876883405951378
  //   -> 0.01 + 0.045*0.0123116594048622
  CHECK(rz::lr_at(s, 23) == lr(0.010554024673218806));
  CHECK(rz::lr_at(s, 24) == lr(0.01));  // the end: min_lr
  CHECK(rz::lr_at(s, 25) == lr(0.01));  // beyond the end: held at min_lr
  CHECK(rz::lr_at(s, 100000) == lr(0.01));
}

TEST_CASE("lr schedule: cosine without warmup prefix (timm's cosine default)") {
  // The cosine runs over t = step in [0, 24); warmup overrides steps 0..3.
  //   step 4: cos(4pi/24) = cos(pi/6) = 0.8660254037844387
  //           -> 0.01 + 0.045*1.8660254037844387 = 0.09397114317029974
  //   step 12: midpoint -> 0.055;  step 24: min_lr.
  LrSchedule s{.kind = LrSchedule::Kind::cosine,
               .base_lr = 0.1,
               .warmup_steps = 4,
               .warmup_init_lr = 0.001,
               .warmup_prefix = false,
               .total_steps = 24,
               .min_lr = 0.01};
  CHECK(rz::lr_at(s, 3) == lr(0.07525));
  CHECK(rz::lr_at(s, 4) == lr(0.09397114317029974));
  CHECK(rz::lr_at(s, 12) == lr(0.055));
  CHECK(rz::lr_at(s, 24) == lr(0.01));
}

TEST_CASE("lr schedule: cosine without warmup starts at base_lr") {
  // total 10: step 0 -> 0.1, step 5 -> (0.1+0)/2, step 10 -> 0.
  LrSchedule s{.kind = LrSchedule::Kind::cosine, .base_lr = 0.1, .total_steps = 10};
  CHECK(rz::lr_at(s, 0) == lr(0.1));
  CHECK(rz::lr_at(s, 5) == lr(0.05));
  CHECK(rz::lr_at(s, 10) == doctest::Approx(0.0).epsilon(1e-12));
}

TEST_CASE("lr schedule: parse kind names") {
  CHECK(rz::parse_schedule_kind("constant") == LrSchedule::Kind::constant);
  CHECK(rz::parse_schedule_kind("step") == LrSchedule::Kind::step);
  CHECK(rz::parse_schedule_kind("multistep") == LrSchedule::Kind::multistep);
  CHECK(rz::parse_schedule_kind("cosine") == LrSchedule::Kind::cosine);
  for (auto k : {LrSchedule::Kind::constant, LrSchedule::Kind::step, LrSchedule::Kind::multistep,
                 LrSchedule::Kind::cosine})
    CHECK(rz::parse_schedule_kind(rz::schedule_kind_name(k)) == k);

  try {
    (void)rz::parse_schedule_kind("cosin");
    FAIL("no exception for an unknown name");
  } catch (const rz::Error& e) {
    CHECK(std::string(e.what()).find("'cosin'") != std::string::npos);
  }
  CHECK_THROWS_AS((void)rz::parse_schedule_kind(""), rz::Error);
  CHECK_THROWS_AS((void)rz::parse_schedule_kind("Cosine"), rz::Error);  // names are exact
}

TEST_CASE("lr schedule: invalid schedules throw") {
  const LrSchedule constant{.base_lr = 0.1};
  CHECK_THROWS_AS((void)rz::lr_at(constant, -1), rz::Error);

  LrSchedule step{.kind = LrSchedule::Kind::step, .base_lr = 0.1, .step_size = 0};
  CHECK_THROWS_AS((void)rz::lr_at(step, 0), rz::Error);

  LrSchedule multi{.kind = LrSchedule::Kind::multistep, .base_lr = 0.1, .milestones = {5, 2}};
  CHECK_THROWS_AS(rz::check_schedule(multi), rz::Error);

  // With the warmup prefix, a cosine needs at least one step after warmup.
  LrSchedule cosine{
      .kind = LrSchedule::Kind::cosine, .base_lr = 0.1, .warmup_steps = 10, .total_steps = 10};
  CHECK_THROWS_AS((void)rz::lr_at(cosine, 0), rz::Error);
  cosine.total_steps = 11;
  CHECK_NOTHROW((void)rz::lr_at(cosine, 0));

  LrSchedule warm{.base_lr = 0.1, .warmup_steps = -1};
  CHECK_THROWS_AS(rz::check_schedule(warm), rz::Error);
}
