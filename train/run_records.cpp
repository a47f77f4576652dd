#include "train/run_records.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/fault.h"
#include "train/run_folder.h"

namespace fs = std::filesystem;

namespace rz {

namespace {
nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
}  // namespace

void RunRecords::append_jsonl(const std::string& line) const {
  append_line((fs::path(dir_) / "metrics.jsonl").string(), line);
}

void RunRecords::resume(int64_t committed_epochs, const std::function<void(const std::string&)>& log) {
  if (!writer_) return;  // the writing rank alone reads and repairs the logs
  RunLogRepair logs = repair_run_logs(dir_, committed_epochs);
  if (logs.dropped_metrics_lines + logs.dropped_summary_lines > 0)
    log("resume: dropped " + std::to_string(logs.dropped_metrics_lines) + " metrics.jsonl and " +
        std::to_string(logs.dropped_summary_lines) + " summary.csv lines written after last.ckpt (epoch " +
        std::to_string(committed_epochs) + ")");
  if (!logs.missing_epochs.empty())
    log("warning: metrics.jsonl has no line for " + std::to_string(logs.missing_epochs.size()) +
        " committed epoch(s), the first " + std::to_string(logs.missing_epochs.front()));
  history_ = std::move(logs.history);
}

void RunRecords::step_line(int64_t epoch, int64_t step, double loss, double lr, double images_per_s,
                           std::optional<double> grad_norm) {
  if (!writer_) return;
  nlohmann::json j{{"type", "step"}, {"epoch", epoch}, {"step", step},
                   {"loss", loss}, {"lr", lr}, {"images_per_s", images_per_s}};
  if (grad_norm) j["grad_norm"] = *grad_norm;
  append_jsonl(j.dump());
}

void RunRecords::epoch_lines(const EpochRecord& rec, int64_t step, int64_t images) {
  history_.push_back(rec);
  if (!writer_) return;
  nlohmann::json j{{"type", "epoch"}, {"epoch", rec.epoch}, {"step", step},
                   {"train_loss", rec.train_loss}, {"val_loss", rec.val_loss},
                   {"lr", rec.lr}, {"seconds", rec.seconds}, {"images", images}};
  j["mean_auc"] = finite_or_null(rec.mean_auc);
  if (kd_) j["feat_loss"] = finite_or_null(rec.feat_loss);
  nlohmann::json aucs = nlohmann::json::array();
  for (const auto& a : rec.auc) aucs.push_back(a ? nlohmann::json(*a) : nlohmann::json());
  j["auc"] = aucs;
  fault_point("epoch files", "metrics.jsonl");
  append_jsonl(j.dump());
  fault_point("epoch files", "summary.csv");
  append_summary_row(dir_, rec);
}

void RunRecords::report(const std::string& title, const std::string& config_toml, int64_t best_epoch,
                        const std::vector<RocCurve>& roc) const {
  if (!writer_) return;
  ReportInput rin;
  rin.title = title;
  rin.config_toml = config_toml;
  rin.epochs = history_;
  rin.best_epoch = best_epoch;
  rin.roc = roc;
  fault_point("epoch files", "report.html");
  write_report((fs::path(dir_) / "report.html").string(), rin);
}

}  // namespace rz
