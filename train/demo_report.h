// The demo's report, demo/report.html: one self-contained file (inline SVG and
// PNG, no scripts, no external assets) that puts the four runs of `ranzcr demo`
// side by side: the per-label AUC table with the best run of each row marked,
// ROC curves per label with the four runs overlaid, loss and mean-AUC curves
// per epoch, wall time per stage, and a strip of sample inputs (the teacher's
// annotated image beside the student's plain one, with their labels).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/ranzcr_csv.h"
#include "train/report.h"

namespace rz {

struct DemoReportRun {
  std::string name;   // "teacher", "control student", ...
  std::string input;  // what it reads: "annotated images", "plain images"
  std::array<std::optional<double>, kNumRanzcrLabels> auc{};
  double mean_auc = 0;
  int64_t studies = 0;             // validation studies it was scored on
  std::vector<RocCurve> roc;       // per label (may be empty)
  std::vector<EpochRecord> epochs; // its training history
  double seconds = 0;              // wall time of its stage
  bool seconds_logged = false;     // seconds are its logged epochs' (the stage was trained by an earlier run)
};

struct DemoSampleImage {
  std::string uid;
  data::Image annotated;  // the teacher's input (RGB or gray)
  data::Image plain;      // the student's input
  std::array<float, kNumRanzcrLabels> labels{};
};

struct DemoReportInput {
  std::string title;
  std::string setup;  // a paragraph: data, model, size, epochs, machine
  std::vector<DemoReportRun> runs;
  std::vector<std::pair<std::string, double>> other_seconds;  // synth, prep, evaluation
  std::vector<DemoSampleImage> samples;
};

std::string render_demo_report_html(const DemoReportInput& in);
void write_demo_report(const std::string& path, const DemoReportInput& in);  // atomic

}  // namespace rz
