#include <doctest/doctest.h>

#include "train/report.h"

using namespace rz;

TEST_CASE("report: HTML with the AUC table, curves and ROC plots") {
  ReportInput in;
  in.title = "teacher <fold 0>";
  in.config_toml = "[run]\nname = \"a&b\"\n";
  for (int e = 1; e <= 3; ++e) {
    EpochRecord r;
    r.epoch = e;
    r.train_loss = 0.5 / e;
    r.val_loss = 0.6 / e;
    r.mean_auc = 0.7 + 0.05 * e;
    r.auc.fill(0.8);
    r.auc[0].reset();
    in.epochs.push_back(r);
  }
  in.best_epoch = 3;
  const float scores[] = {0.1f, 0.4f, 0.35f, 0.8f};
  const float labels[] = {0, 0, 1, 1};
  in.roc.assign(kNumRanzcrLabels, roc_curve(scores, labels, 4));
  const std::string h = render_report_html(in);
  CHECK(h.find("best epoch 3: mean 0.8500") != std::string::npos);
  CHECK(h.find("ETT - Abnormal</td><td>undefined") != std::string::npos);
  CHECK(h.find("Swan Ganz Catheter Present</td><td>0.8000") != std::string::npos);
  CHECK(h.find("teacher &lt;fold 0&gt;") != std::string::npos);  // escaped
  CHECK(h.find("a&amp;b") != std::string::npos);
  size_t svgs = 0;
  for (size_t p = h.find("<svg"); p != std::string::npos; p = h.find("<svg", p + 1)) ++svgs;
  CHECK(svgs == 2 + kNumRanzcrLabels);
  CHECK(h.find("<script") == std::string::npos);
}
