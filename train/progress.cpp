#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace rz {

ProgressMode ProgressLine::auto_mode() {
  return ::isatty(STDERR_FILENO) == 1 ? ProgressMode::live : ProgressMode::plain;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<long long>(std::llround(s));
  char b[32];
  if (t < 60) {
    std::snprintf(b, sizeof b, "%llds", t);
  } else if (t < 3600) {
    std::snprintf(b, sizeof b, "%lldm%02llds", t / 60, t % 60);
  } else {
    std::snprintf(b, sizeof b, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
  }
  return b;
}

ProgressLine::ProgressLine(std::string label, int64_t total, std::string unit, ProgressMode mode,
                           double every_s, int64_t every_n, Sink sink, Clock clock)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      mode_(mode),
      every_s_(every_s),
      every_n_(every_n),
      sink_(std::move(sink)),
      clock_(std::move(clock)) {
  if (!sink_) sink_ = [](const std::string& s) {
    std::fputs(s.c_str(), stderr);
    std::fflush(stderr);
  };
  if (!clock_) clock_ = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  start_ = clock_();
}

ProgressLine::~ProgressLine() {
  if (!finished_) finish();
}

std::string ProgressLine::format(int64_t done, int64_t units, double elapsed, const std::string& fields) const {
  std::string s = label_;
  char b[160];
  if (total_ > 0) {
    std::snprintf(b, sizeof b, " %lld/%lld %3d%%", static_cast<long long>(done), static_cast<long long>(total_),
                  static_cast<int>(100 * std::clamp<int64_t>(done, 0, total_) / total_));
  } else {
    std::snprintf(b, sizeof b, " %lld", static_cast<long long>(done));
  }
  s += b;
  if (elapsed > 0 && units > 0) {
    std::snprintf(b, sizeof b, "  %.1f %s/s", static_cast<double>(units) / elapsed, unit_.c_str());
    s += b;
  }
  if (total_ > 0 && done > 0 && done < total_ && elapsed > 0) {
    s += "  ETA " + format_duration(elapsed * static_cast<double>(total_ - done) / static_cast<double>(done));
  } else if (total_ > 0 && done >= total_) {
    s += "  in " + format_duration(elapsed);
  }
  if (!fields.empty()) s += "  " + fields;
  return s;
}

void ProgressLine::emit(bool final) {
  const double now = clock_();
  const std::string line = format(done_, units_, now - start_, fields_);
  if (mode_ == ProgressMode::live) {
    sink_("\r" + line + "\033[K" + (final ? "\n" : ""));
  } else {
    sink_(line + "\n");
  }
  shown_ = !final;
  last_emit_ = now;
  last_done_ = done_;
}

void ProgressLine::update(int64_t done, int64_t units, const std::string& fields) {
  if (mode_ == ProgressMode::off || finished_) return;
  done_ = done;
  units_ = units < 0 ? done : units;
  fields_ = fields;
  const double now = clock_();
  if (mode_ == ProgressMode::live) {
    if (now - last_emit_ >= 0.1 || (total_ > 0 && done >= total_)) emit(false);
    return;
  }
  const bool by_time = now - last_emit_ >= every_s_ && now - start_ >= every_s_;
  const bool by_count = every_n_ > 0 && done_ - last_done_ >= every_n_;
  if (by_time || by_count) emit(false);
}

void ProgressLine::finish(const std::string& fields) {
  if (finished_) return;
  finished_ = true;
  if (mode_ == ProgressMode::off) return;
  if (!fields.empty()) fields_ = fields;
  emit(true);
}

void ProgressLine::close() {
  clear();
  finished_ = true;
}

void ProgressLine::clear() {
  if (mode_ == ProgressMode::live && shown_) {
    sink_("\r\033[K");
    shown_ = false;
    last_emit_ = -1e300;
  }
}

}  // namespace rz
