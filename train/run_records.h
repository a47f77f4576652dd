// The records a training run keeps besides its checkpoints: metrics.jsonl
// (one line per logged step and per epoch), summary.csv (one row per epoch),
// report.html, and the epoch history the report draws, which a resume
// rebuilds from metrics.jsonl. Only the writing rank writes (rank 0 of a
// data-parallel run); the others keep the history alone.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "train/metrics.h"
#include "train/report.h"

namespace rz {

class RunRecords {
 public:
  RunRecords(std::string dir, bool kd, bool writer) : dir_(std::move(dir)), kd_(kd), writer_(writer) {}

  // Resume after `committed_epochs` (what last.ckpt holds): log lines of
  // later epochs are dropped, and the history comes back from metrics.jsonl
  // (on the writing rank; the others' history holds this run's epochs only).
  void resume(int64_t committed_epochs, const std::function<void(const std::string&)>& log);

  // A "step" line of metrics.jsonl (every train.log_every optimizer steps).
  void step_line(int64_t epoch, int64_t step, double loss, double lr, double images_per_s,
                 std::optional<double> grad_norm);

  // The epoch's log lines, written before last.ckpt: metrics.jsonl, then
  // summary.csv (each behind its fault point "epoch files <file>"). The
  // record joins the history.
  void epoch_lines(const EpochRecord& rec, int64_t step, int64_t images);

  // report.html from the history (after the checkpoints).
  void report(const std::string& title, const std::string& config_toml, int64_t best_epoch,
              const std::vector<RocCurve>& roc) const;

  const std::vector<EpochRecord>& history() const { return history_; }

 private:
  void append_jsonl(const std::string& line) const;
  std::string dir_;
  bool kd_, writer_;
  std::vector<EpochRecord> history_;
};

}  // namespace rz
