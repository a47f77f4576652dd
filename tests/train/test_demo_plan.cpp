// The demo's plan, as `ranzcr demo --dry-run` prints it: the presets (CPU and
// --full), the chaining of the stages, and --set over every stage.
#include <doctest/doctest.h>

#include "engine/error.h"
#include "train/demo.h"

using namespace rz;

TEST_CASE("demo plan: the CPU preset and --full, stages chained, overrides applied") {
  DemoOptions o;
  o.out_dir = "d";
  const DemoPlan cpu = make_demo_plan(o, "cpu", "fp32");
  CHECK(cpu.teacher.model.name == "seresnet_tiny");
  CHECK(cpu.teacher.model.img_size == 128);
  CHECK(cpu.synth.n == 1200);
  CHECK(cpu.synth.tube_contrast == 4.0);
  CHECK(cpu.prep.image_size == 160);
  CHECK(cpu.teacher.stage.kind == "teacher");
  CHECK(cpu.teacher.stage.annotation_style == "device");
  CHECK(cpu.teacher.model.in_chans == 3);
  CHECK(cpu.distilled.stage.kind == "student-kd");
  CHECK(cpu.distilled.stage.teacher == "d/runs/teacher/best.ckpt");
  CHECK(cpu.distilled.stage.init == cpu.distilled.stage.teacher);  // the staged transfer, then features
  CHECK(cpu.control.stage.init.empty());  // the control starts from scratch
  CHECK(cpu.control.stage.kind == "finetune");
  CHECK(cpu.control.data.annotated_only);  // the distilled student's studies, no teacher
  CHECK(cpu.control.train.epochs == cpu.distilled.train.epochs);
  CHECK(cpu.finetuned.stage.init == "d/runs/student_distilled/best.ckpt");
  CHECK(cpu.finetuned.train.epochs == cpu.distilled.train.epochs / 2);
  CHECK(cpu.teacher.train.epochs == 4 * cpu.distilled.train.epochs);
  CHECK(cpu.synth.annotated_fraction == 0.5);
  // Batches of 8, the students at 1.5x the teacher's peak learning rate, the fine-tune at a quarter.
  for (const TrainConfig* c : {&cpu.teacher, &cpu.distilled, &cpu.control, &cpu.finetuned}) CHECK(c->train.batch == 8);
  CHECK(cpu.teacher.optim.lr == doctest::Approx(2e-3));
  CHECK(cpu.distilled.optim.lr == doctest::Approx(3e-3));
  CHECK(cpu.control.optim.lr == cpu.distilled.optim.lr);  // the same schedule, no teacher
  CHECK(cpu.control.sched.min_lr == doctest::Approx(3e-5));
  CHECK(cpu.finetuned.optim.lr == doctest::Approx(cpu.distilled.optim.lr / 4));
  CHECK(cpu.eval_teacher.stage.kind == "teacher");
  CHECK(cpu.eval_plain.stage.kind == "finetune");
  CHECK(cpu.str().find("stage student_control") != std::string::npos);

  o.full = true;
  const DemoPlan full = make_demo_plan(o, "cuda", "bf16");
  CHECK(full.teacher.model.name == "seresnet152d");
  CHECK(full.teacher.model.img_size == 512);
  CHECK(full.synth.n == 3000);
  CHECK(full.teacher.run.device == "cuda");
  CHECK(full.teacher.run.precision == "bf16");
  CHECK(full.teacher.data.workers >= 2);
  CHECK(full.teacher.train.epochs == full.distilled.train.epochs);
  // Sized for 10 minutes on one GPU: at the seresnet152d 512 px bf16 training step
  // measured on an H200 (158.75 images/s, eager, batch 32; bench/RESULTS.md, third
  // run), the training steps take at most 6 minutes, leaving the rest for synth,
  // prep, validation each epoch and a slower H100.
  CHECK(full.teacher.train.batch == 32);
  CHECK(full.training_images() / 158.75 <= 360.0);
  CHECK(full.training_images() > 0.5 * 360.0 * 158.75);  // and not a token run
  // The CPU preset's expected work, against the counts its runs logged: 437 annotated
  // training studies (seed 0) and 960 in all.
  const double cpu_work = 437.0 * (80 + 20 * 1.35 + 20) + 960.0 * 10;
  CHECK(cpu.training_images() == doctest::Approx(cpu_work).epsilon(0.05));
  CHECK(full.str().find("work: about") != std::string::npos);

  o.full = false;
  o.sets = {"train.batch=16", "stage.w_feat=2", "optim.lr=1e-3"};
  const DemoPlan set = make_demo_plan(o, "cpu", "fp32");
  for (const TrainConfig* c : {&set.teacher, &set.distilled, &set.control, &set.finetuned}) CHECK(c->train.batch == 16);
  for (const TrainConfig* c : {&set.teacher, &set.distilled, &set.control}) CHECK(c->optim.lr == doctest::Approx(1e-3));
  CHECK(set.finetuned.optim.lr == doctest::Approx(1e-3 / 4));
  CHECK(set.distilled.stage.w_feat == 2.0);
  o.sets = {"train.bogus=1"};
  CHECK_THROWS_WITH_AS(make_demo_plan(o, "cpu", "fp32"), doctest::Contains("train.bogus"), Error);
}
