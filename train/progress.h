// Progress of a long loop (training steps, prep, predict, synth): a live line
// redrawn in place when stderr is a terminal, else plain lines at intervals
// (every `every_n` items or `every_s` seconds, whichever comes first, and at
// the end), so a CI log gets a line every half minute, not one per step.
//
//   ProgressLine p("epoch 3/10", total_batches, "img", ProgressLine::auto_mode());
//   for (...) p.update(done, images_done, "loss 0.1234");
//   p.finish();
//
// The line: "<label> <done>/<total> <pct>%  <rate> <unit>/s  ETA <t>  <fields>".
// The rate counts `units` (images, say) when given, else items; the ETA
// extrapolates the items' average pace. Output goes to a sink (stderr by
// default); tests pass their own sink and clock.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace rz {

enum class ProgressMode { off, plain, live };

class ProgressLine {
 public:
  // live when stderr is a terminal, else plain.
  static ProgressMode auto_mode();

  using Sink = std::function<void(const std::string&)>;  // receives raw text ("\r...", "...\n")
  using Clock = std::function<double()>;                 // seconds, monotonic

  ProgressLine(std::string label, int64_t total, std::string unit, ProgressMode mode,
               double every_s = 30.0, int64_t every_n = 0, Sink sink = {}, Clock clock = {});
  ~ProgressLine();  // finish() if not finished
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // done items of total; units (e.g. images) so far, < 0: same as done.
  void update(int64_t done, int64_t units = -1, const std::string& fields = "");
  // The last state as a final line (plain) or the line completed with a newline (live).
  void finish(const std::string& fields = "");
  // Erases a live line so that another message can be printed; the next
  // update redraws it. No-op in plain mode.
  void clear();
  // Ends without a final line (a live line is erased): the caller prints its own summary.
  void close();

  // The text of the line for a state (no "\r" or newline).
  std::string format(int64_t done, int64_t units, double elapsed_s, const std::string& fields) const;

  ProgressMode mode() const { return mode_; }
  void set_total(int64_t total) { total_ = total; }

 private:
  void emit(bool final);
  std::string label_, unit_;
  int64_t total_;
  ProgressMode mode_;
  double every_s_;
  int64_t every_n_;
  Sink sink_;
  Clock clock_;
  double start_ = 0, last_emit_ = -1e300;
  int64_t done_ = 0, units_ = 0, last_done_ = 0;
  std::string fields_;
  bool shown_ = false, finished_ = false;
};

// "1m05s", "42s", "2h03m".
std::string format_duration(double seconds);

}  // namespace rz
