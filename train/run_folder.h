// The run folder's files around its checkpoints (train/trainer.h lists them):
// the append-only logs and their repair on resume, the temporaries of
// interrupted writes, and the comparison of a resumed run's configuration
// with the one its last.ckpt recorded.
//
// Invariant kept by the trainer: last.ckpt is the commit point of an epoch.
// metrics.jsonl and summary.csv get an epoch's lines just before its
// last.ckpt, so after a kill they hold at most one epoch (and some step
// lines, maybe a torn last line) beyond it; repair_run_logs() drops those
// and the epoch runs again, writing its lines once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/module.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/report.h"

namespace rz {

using RunLog = std::function<void(const std::string&)>;

// The files of a run folder, by name.
inline constexpr const char* kRunFiles[] = {"config.toml", "metrics.jsonl", "summary.csv", "last.ckpt",
                                            "best.ckpt",   "best.safetensors", "report.html"};

// Removes, in the run folder `dir`, the temporaries interrupted writes left:
// AtomicFile's ".<name>.tmp-XXXXXX" for any name, and the names earlier
// versions used for the run's own files ("<name>.tmp", "<name>.tmp.<pid>").
// Regular files only: a link at such a name is neither followed nor removed.
// Returns how many files were removed.
int remove_run_temporaries(const std::string& dir);

// Appends `line` and a newline to `path` in one write (O_APPEND; a link at
// `path` is refused, never followed). When the file is new or empty,
// `header` (if any) goes first.
void append_line(const std::string& path, const std::string& line, const std::string& header = "");

struct RunLogRepair {
  std::vector<EpochRecord> history;   // metrics.jsonl's epoch records 1..epochs_done
  int64_t dropped_metrics_lines = 0;  // later epochs or torn lines, removed
  int64_t dropped_summary_lines = 0;
  std::vector<int64_t> missing_epochs;  // committed epochs without a metrics.jsonl line
};

// Makes metrics.jsonl and summary.csv hold exactly what last.ckpt committed
// (`epochs_done` epochs): lines of later epochs and torn or unreadable lines
// are dropped, and a changed file is rewritten atomically. Missing files are
// left missing.
RunLogRepair repair_run_logs(const std::string& dir, int64_t epochs_done);

// One key whose value differs between two configurations.
struct ConfigChange {
  std::string key, before, after;  // values as TOML text
  bool safe = false;               // in resume_safe_config_keys()
};

// Configuration keys a resumed run may change freely: train.epochs (to
// extend a run), threads, loader workers, logging cadence, and settings of
// speed, device or output that leave what the run computes alone.
const std::vector<std::string>& resume_safe_config_keys();

// Differences between two configurations given as TOML (each read with
// parse_config, so keys left at their defaults compare equal to explicit
// defaults); errors name `before_source` or `after_source`.
std::vector<ConfigChange> config_changes(const std::string& before_toml, const std::string& before_source,
                                         const std::string& after_toml, const std::string& after_source);

// The epoch's row of summary.csv (its header first when the file is new).
void append_summary_row(const std::string& dir, const EpochRecord& rec);

// best.ckpt and best.safetensors of the state's best epoch (the state's own
// epoch), from `best`: the weights that scored best (the EMA's when EMA is on).
void write_best_files(const std::string& dir, const Module& best, const TrainState& state, const std::string& stage);

// On resume, after last.ckpt is loaded: best.ckpt and best.safetensors must
// hold the best epoch last.ckpt records. When that is last.ckpt's own epoch,
// a kill may have come between last.ckpt and them: they are rewritten from
// `best` (as loaded from last.ckpt). An older best epoch lives only in
// best.ckpt, so a missing or different best.ckpt is an error naming it;
// best.safetensors is rederived from best.ckpt.
void check_best_files(const std::string& dir, const TrainState& state, const Module& best, const std::string& stage,
                      const RunLog& log);

// Before a resume touches anything: config.toml (`cfg`) against the
// configuration stored in last.ckpt (`saved`), key by key (safe keys logged,
// others refused with every key and both values unless
// `allow_config_change`), and the saved state against cfg (epoch <=
// train.epochs, an epoch-end checkpoint).
void check_resume(const std::string& dir, const TrainConfig& cfg, const TrainState& saved, bool allow_config_change,
                  const RunLog& log);

}  // namespace rz
