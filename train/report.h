// The run report: one self-contained HTML file with inline SVG (no scripts,
// no external assets): the per-label AUC table of the best epoch, a ROC curve
// per label, and loss / mean-AUC curves over the epochs.
#pragma once

#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "train/metrics.h"

namespace rz {

struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0, val_loss = 0, mean_auc = 0, lr = 0, seconds = 0;
  // student-kd: the epoch's mean feature-distillation term, MSE(student features,
  // teacher features) before its weight stage.w_feat; NaN for other stages.
  double feat_loss = std::numeric_limits<double>::quiet_NaN();
  std::array<std::optional<double>, kNumRanzcrLabels> auc{};
};

struct ReportInput {
  std::string title;                      // e.g. the run name and stage
  std::string config_toml;                // shown verbatim
  std::vector<EpochRecord> epochs;
  int64_t best_epoch = -1;
  std::vector<RocCurve> roc;              // per label, of the best epoch (may be empty)
};

std::string render_report_html(const ReportInput& in);

// The pieces the run report and the demo report share.
namespace html {
std::string fmt(const char* printf_format, double v);
std::string escape(const std::string& s);  // &, <, >, "
// "<!DOCTYPE html>...<body>": the reports' page head and shared style, plus extra_css.
std::string page_start(const std::string& title, const std::string& extra_css);
// A line chart of one or more series over x, in a w x h box with axes and a
// legend of the named series; unit_square fixes both axes to [0, 1] (ROC).
struct Series {
  std::string name, color;
  std::vector<double> x, y;
};
std::string svg_chart(const std::vector<Series>& series, const std::string& title, double w, double h,
                      bool unit_square);
}  // namespace html
void write_report(const std::string& path, const ReportInput& in);  // atomic

}  // namespace rz
