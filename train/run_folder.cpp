#include "train/run_folder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/ranzcr_csv.h"
#include "engine/atomic_file.h"
#include "engine/json_depth.h"
#include "engine/error.h"
#include "engine/fault.h"
#include "engine/safetensors.h"
#include "models/timm_weights.h"
#include "train/config.h"

namespace fs = std::filesystem;

namespace rz {

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "<name>.tmp" or "<name>.tmp.<pid>" for one of the run's files: the
// temporaries of the writers before AtomicFile.
bool is_old_style_temporary(const std::string& file) {
  for (const char* name : kRunFiles) {
    const std::string stem = std::string(name) + ".tmp";
    if (file == stem) return true;
    if (file.size() > stem.size() + 1 && file.starts_with(stem + ".") &&
        all_digits(std::string_view(file).substr(stem.size() + 1)))
      return true;
  }
  return false;
}

std::string read_whole(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  RZ_CHECK(f.good(), "cannot read ", p.string(), ": ", std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  RZ_CHECK(!f.bad(), "cannot read ", p.string());
  return ss.str();
}

// The complete lines of `text` (each ended by '\n', without it); *torn is set
// when text ends with a partial line (a write interrupted mid-line).
std::vector<std::string> complete_lines(const std::string& text, bool* torn) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (true) {
    const size_t nl = text.find('\n', start);
    if (nl == std::string::npos) break;
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  *torn = start < text.size();
  return lines;
}

double number_or_nan(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

EpochRecord epoch_record(const nlohmann::json& j, int64_t epoch) {
  EpochRecord r;
  r.epoch = epoch;
  r.train_loss = number_or_nan(j, "train_loss");
  r.val_loss = number_or_nan(j, "val_loss");
  r.feat_loss = number_or_nan(j, "feat_loss");
  r.mean_auc = number_or_nan(j, "mean_auc");
  r.lr = number_or_nan(j, "lr");
  r.seconds = number_or_nan(j, "seconds");
  const auto auc = j.find("auc");
  if (auc != j.end() && auc->is_array())
    for (size_t k = 0; k < kNumRanzcrLabels && k < auc->size(); ++k)
      if ((*auc)[k].is_number()) r.auc[k] = (*auc)[k].get<double>();
  return r;
}

// A run log to repair: a regular file (a link there is an error, never
// followed) or nothing.
bool log_exists(const fs::path& p) {
  std::error_code ec;
  const auto st = fs::symlink_status(p, ec);
  if (ec || !fs::exists(st)) return false;
  RZ_CHECK(fs::is_regular_file(st), p.string(), " is not a regular file (a link or a folder): "
                                                "the run's logs are written only inside its folder");
  return true;
}

// A TOML number as the shortest text that reads back as the same double
// (0.005, not 0.0050000000000000001); anything else as it is.
std::string shortest_number(const std::string& v) {
  if (v.find_first_of(".eE") == std::string::npos) return v;
  double x = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size()) return v;
  char buf[64];
  const auto [p, ec2] = std::to_chars(buf, buf + sizeof buf, x);
  return ec2 == std::errc() ? std::string(buf, p) : v;
}

// "key = value" per configuration key of config_to_toml's output; a value
// continued on following lines keeps them.
std::map<std::string, std::string> config_values(const std::string& toml) {
  std::map<std::string, std::string> out;
  std::string section, last;
  std::istringstream in(toml);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 2 && line.front() == '[' && line.back() == ']' &&
        line.find_first_not_of("abcdefghijklmnopqrstuvwxyz_", 1) == line.size() - 1) {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const size_t eq = line.find(" = ");
    if (eq != std::string::npos && line.find_first_of(" \"'[") == eq) {
      last = section + "." + line.substr(0, eq);
      out[last] = shortest_number(line.substr(eq + 3));
    } else if (!last.empty() && !line.empty()) {
      out[last] += "\n" + line;
    }
  }
  return out;
}

// The epoch best.safetensors says it holds (its "epoch" metadata), -1 when
// it is missing, unreadable or does not say.
int64_t best_safetensors_epoch(const fs::path& path) {
  if (!fs::exists(path)) return -1;
  try {
    std::map<std::string, std::string> meta;
    read_safetensors_header(path.string(), &meta);
    const auto it = meta.find("epoch");
    int64_t e = -1;
    if (it == meta.end()) return -1;
    const auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), e);
    return ec == std::errc() && p == it->second.data() + it->second.size() ? e : -1;
  } catch (const Error&) {
    return -1;
  }
}

// The epoch a best.ckpt holds (its epoch, which must be its best_epoch), -1 otherwise.
int64_t best_ckpt_epoch(const fs::path& path) {
  const TrainState b = read_checkpoint_state(path.string());
  return b.best_epoch == b.epoch ? b.best_epoch : -1;
}

}  // namespace

int remove_run_temporaries(const std::string& dir) {
  int removed = remove_stale_temporaries(dir);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!is_old_style_temporary(name)) continue;
    std::error_code sec;
    if (!fs::is_regular_file(it->symlink_status(sec)) || sec) continue;  // links stay untouched
    if (fs::remove(it->path(), sec) && !sec) ++removed;
  }
  return removed;
}

void append_line(const std::string& path, const std::string& line, const std::string& header) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int e = errno;
    RZ_THROW("cannot append to ", path, ": ",
             e == ELOOP ? std::string("it is a symbolic link (never followed)") : std::strerror(e));
  }
  struct stat st {};
  std::string bytes;
  if (::fstat(fd, &st) == 0 && st.st_size == 0 && !header.empty()) bytes = header + "\n";
  bytes += line;
  bytes += '\n';
  // One write: a kill leaves the line whole or torn at the end, never
  // interleaved; a torn last line is dropped by repair_run_logs().
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      RZ_THROW("cannot append to ", path, ": ", std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  RZ_CHECK(::close(fd) == 0, "cannot append to ", path, ": ", std::strerror(errno));
}

RunLogRepair repair_run_logs(const std::string& dir, int64_t epochs_done) {
  RunLogRepair r;
  const fs::path metrics = fs::path(dir) / "metrics.jsonl";
  if (log_exists(metrics)) {
    bool torn = false;
    const auto lines = complete_lines(read_whole(metrics), &torn);
    r.dropped_metrics_lines += torn;
    std::map<int64_t, EpochRecord> epochs;
    std::string kept;
    for (const auto& line : lines) {
      const auto j = json_depth(line) <= kMaxJsonDepth ? nlohmann::json::parse(line, nullptr, false)
                                                         : nlohmann::json(nlohmann::json::value_t::discarded);
      bool keep = !j.is_discarded() && j.is_object();
      if (keep && j.contains("epoch")) {
        const auto& e = j["epoch"];
        keep = e.is_number_integer() && e.get<int64_t>() <= epochs_done;
        if (keep && j.value("type", std::string()) == "epoch")
          epochs[e.get<int64_t>()] = epoch_record(j, e.get<int64_t>());  // the last line of an epoch wins
      }
      if (keep) kept += line + "\n";
      else ++r.dropped_metrics_lines;
    }
    if (r.dropped_metrics_lines > 0) write_file_atomic(metrics.string(), kept, "metrics log");
    for (int64_t e = 1; e <= epochs_done; ++e) {
      const auto it = epochs.find(e);
      if (it == epochs.end()) r.missing_epochs.push_back(e);
      else r.history.push_back(it->second);
    }
  } else {
    for (int64_t e = 1; e <= epochs_done; ++e) r.missing_epochs.push_back(e);
  }

  const fs::path summary = fs::path(dir) / "summary.csv";
  if (log_exists(summary)) {
    bool torn = false;
    const auto lines = complete_lines(read_whole(summary), &torn);
    r.dropped_summary_lines += torn;
    std::string kept;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string& line = lines[i];
      bool keep = i == 0 && line.starts_with("epoch,");
      if (!keep) {
        int64_t epoch = -1;
        const char* end = line.data() + line.size();
        const auto [p, ec] = std::from_chars(line.data(), end, epoch);
        keep = ec == std::errc() && p != end && *p == ',' && epoch >= 1 && epoch <= epochs_done;
      }
      if (keep) kept += line + "\n";
      else ++r.dropped_summary_lines;
    }
    if (r.dropped_summary_lines > 0) write_file_atomic(summary.string(), kept, "summary");
  }
  return r;
}

const std::vector<std::string>& resume_safe_config_keys() {
  static const std::vector<std::string> keys = {
      "train.epochs",                                             // extend (or end) a run
      "run.threads", "data.workers",                              // parallelism
      "train.log_every", "train.profile_steps",                   // logging, profiling
      "run.name", "run.out_dir",                                  // where the folder lives
      "run.memory_check",                                         // a check before training
      "run.device", "run.conv_impl", "run.allow_tf32",            // device and kernels
      "run.deterministic", "run.allow_unvalidated_kernels",       //
      "train.cuda_graph",                                         // the same step, replayed
      "dist.timeout_s",                                           // how long a rank waits
      "model.fused_se", "model.fused_bn", "model.fused_conv_bn",  // the same math, fused
  };
  return keys;
}

std::vector<ConfigChange> config_changes(const std::string& before_toml, const std::string& before_source,
                                         const std::string& after_toml, const std::string& after_source) {
  const auto before = config_values(config_to_toml(parse_config(before_toml, before_source)));
  const auto after = config_values(config_to_toml(parse_config(after_toml, after_source)));
  const auto& safe = resume_safe_config_keys();
  std::vector<ConfigChange> out;
  auto note = [&](const std::string& key, const std::string& b, const std::string& a) {
    out.push_back({key, b, a, std::find(safe.begin(), safe.end(), key) != safe.end()});
  };
  for (const auto& [key, value] : before) {
    const auto it = after.find(key);
    const std::string now = it == after.end() ? "(absent)" : it->second;
    if (now != value) note(key, value, now);
  }
  for (const auto& [key, value] : after)
    if (!before.count(key)) note(key, "(absent)", value);
  return out;
}

void append_summary_row(const std::string& dir, const EpochRecord& rec) {
  std::string header = "epoch,train_loss,val_loss,mean_auc,lr,seconds";
  for (const auto& name : kRanzcrLabels) header += ",auc " + std::string(name);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld,%.6f,%.6f,%.6f,%.6g,%.2f", static_cast<long long>(rec.epoch),
                rec.train_loss, rec.val_loss, rec.mean_auc, rec.lr, rec.seconds);
  std::string row = buf;
  for (const auto& a : rec.auc) {
    if (a) {
      std::snprintf(buf, sizeof buf, ",%.6f", *a);
      row += buf;
    } else {
      row += ",";
    }
  }
  append_line((fs::path(dir) / "summary.csv").string(), row, header);
}

void write_best_files(const std::string& dir, const Module& best, const TrainState& state, const std::string& stage) {
  fault_point("epoch files", "best.ckpt");
  save_checkpoint((fs::path(dir) / "best.ckpt").string(), best, nullptr, nullptr, state);
  fault_point("epoch files", "best.safetensors");
  save_safetensors((fs::path(dir) / "best.safetensors").string(), timm_state_dict(best),
                   {{"ranzcr_stage", stage},
                    {"mean_auc", std::to_string(state.best_metric)},
                    {"epoch", std::to_string(state.best_epoch)}});
}

void check_best_files(const std::string& dir, const TrainState& state, const Module& best, const std::string& stage,
                      const RunLog& log) {
  if (state.best_epoch < 1) return;
  const fs::path ckpt = fs::path(dir) / "best.ckpt", weights = fs::path(dir) / "best.safetensors";
  if (state.best_epoch == state.epoch) {
    bool current = false;
    try {
      current = fs::exists(ckpt) && best_ckpt_epoch(ckpt) == state.best_epoch &&
                best_safetensors_epoch(weights) == state.best_epoch;
    } catch (const Error&) {  // unreadable: rewritten below
    }
    if (!current) {
      write_best_files(dir, best, state, stage);
      log("resume: best.ckpt and best.safetensors rewritten from last.ckpt (best epoch " +
          std::to_string(state.best_epoch) + ")");
    }
    return;
  }
  RZ_CHECK(fs::exists(ckpt), "cannot resume ", dir, ": ", ckpt.string(), " is missing, but last.ckpt records ",
           "best_epoch = ", state.best_epoch, " (those weights were only there); restore it, or start a new run");
  int64_t recorded = -1;
  try {
    recorded = best_ckpt_epoch(ckpt);
  } catch (const Error& e) {
    RZ_THROW("cannot resume ", dir, ": ", e.what());
  }
  RZ_CHECK(recorded == state.best_epoch, "cannot resume ", dir, ": ", ckpt.string(), " holds epoch ", recorded,
           " but last.ckpt records best_epoch = ", state.best_epoch);
  if (best_safetensors_epoch(weights) != state.best_epoch) {
    const TrainState b = read_checkpoint_state(ckpt.string());
    fault_point("epoch files", "best.safetensors");
    save_safetensors(weights.string(), checkpoint_weights(ckpt.string()),
                     {{"ranzcr_stage", stage},
                      {"mean_auc", std::to_string(b.best_metric)},
                      {"epoch", std::to_string(b.best_epoch)}});
    log("resume: best.safetensors rewritten from best.ckpt (epoch " + std::to_string(b.best_epoch) + ")");
  }
}

void check_resume(const std::string& dir, const TrainConfig& cfg, const TrainState& saved, bool allow_config_change,
                  const RunLog& log) {
  const std::string ckpt = (fs::path(dir) / "last.ckpt").string(), toml = (fs::path(dir) / "config.toml").string();
  const std::string how = "restore config.toml, or resume with allow_config_change "
                          "(ranzcr train --resume " + dir + " --allow-config-change) to continue "
                          "with the new values from epoch " + std::to_string(saved.epoch + 1);
  std::vector<ConfigChange> changes;
  try {
    changes = config_changes(saved.config_toml, ckpt + " (stored configuration)", config_to_toml(cfg), toml);
  } catch (const Error& e) {
    if (!allow_config_change)
      RZ_THROW("cannot resume ", dir, ": the configuration stored in ", ckpt,
               " cannot be compared with config.toml: ", e.what(), "; ", how);
    log("resume: the stored configuration could not be read (" + std::string(e.what()) +
        "); continuing with config.toml (allow_config_change)");
  }
  std::string refused;
  for (const auto& c : changes) {
    if (c.safe || allow_config_change) {
      log("resume: " + c.key + " changed from " + c.before + " to " + c.after +
          (c.safe ? "" : " (allowed by allow_config_change)"));
    } else {
      refused += (refused.empty() ? "" : ", ") + c.key + " (" + c.before + " in last.ckpt, " + c.after +
                 " in config.toml)";
    }
  }
  if (!refused.empty())
    RZ_THROW("cannot resume ", dir, ": ", toml, " differs from the configuration stored in ", ckpt, " in ", refused,
             "; ", how);
  RZ_CHECK(saved.epoch <= cfg.train.epochs, "cannot resume ", dir, ": ", ckpt, " has epoch = ", saved.epoch,
           " but train.epochs = ", cfg.train.epochs, " in ", toml, ": the run is past its end (set train.epochs >= ",
           saved.epoch, " to extend it)");
  RZ_CHECK(saved.batch_in_epoch == 0, "cannot resume ", dir, ": ", ckpt, " has batch_in_epoch = ",
           saved.batch_in_epoch, " (this trainer saves and resumes at epoch ends only)");
}

}  // namespace rz
