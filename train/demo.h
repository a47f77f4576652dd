// `ranzcr demo`: the whole method on a synthetic set, end to end:
// synth -> prep -> teacher (annotated images) -> distilled student
// (student-kd) and a control student trained the same way without the
// teacher -> fine-tune of the distilled student on all images -> one AUC
// table on the held-out fold.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/synth.h"
#include "train/progress.h"
#include "train/trainer.h"

namespace rz {

struct DemoOptions {
  std::string out_dir = "demo";
  uint64_t seed = 0;
  bool full = false;        // seresnet152d-sized settings (for a GPU)
  int64_t n_images = 0;     // 0: the preset's
  int64_t epochs = 0;       // 0: the preset's (per student stage; the fine-tune gets half)
  int64_t teacher_epochs = 0;  // 0: the preset's
  int64_t threads = 0;      // CPU threads, 0: all
  double difficulty = -1;   // synthetic tube faintness 0..1 (<0: the preset's)
  double tube_width = 0;    // synthetic tube width multiplier (0: the preset's)
  double tube_contrast = 0; // synthetic tube contrast multiplier (0: the preset's)
  double annotated_fraction = -1;  // share of studies with devices that are annotated (<0: the preset's)
  int64_t img_size = 0;     // model input size (0: the preset's)
  std::string device = "auto";  // cpu, cuda, cuda:N, auto (a GPU when there is one)
  std::string precision;        // fp32 or bf16; empty: bf16 on CUDA, fp32 on the CPU
  ProgressMode progress = ProgressMode::off;  // synth, prep and every epoch (train/progress.h)
  std::vector<std::string> sets;  // "section.key=value" over every stage's preset config
};

// What a demo will do: the synthetic set, the cache, and the four stages'
// configurations (teacher, distilled student, control student, fine-tune) plus
// the two used for scoring, with every preset and --set applied and each stage
// validated. run_demo follows it; `ranzcr demo --dry-run` prints it.
struct DemoPlan {
  data::SynthOptions synth;
  data::PrepOptions prep;
  TrainConfig teacher, distilled, control, finetuned;
  TrainConfig eval_teacher, eval_plain;
  // Expected images through a training step over all stages, from the preset's
  // prevalences (the exact count depends on the drawn studies): what the demo
  // costs, for sizing it against a device's measured images/s.
  double training_images() const;
  std::string str() const;
};
// `device` and `precision` go into every stage as given (run_demo passes the resolved ones).
DemoPlan make_demo_plan(const DemoOptions& opt, const std::string& device, const std::string& precision);

struct DemoResult {
  EvalResult teacher, control, distilled, finetuned;
  std::string table;  // the printed AUC table
  double seconds = 0;
};

DemoResult run_demo(const DemoOptions& opt, const std::function<void(const std::string&)>& log);

}  // namespace rz
