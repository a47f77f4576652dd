// ProgressLine: the live line redraws in place at most every 0.1 s and ends with a
// newline; plain mode prints every N items or S seconds and at the end; the line's
// rate and ETA follow from the clock.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "train/progress.h"

namespace {
struct Fake {
  double now = 0;
  std::vector<std::string> out;
  rz::ProgressLine::Sink sink() {
    return [this](const std::string& s) { out.push_back(s); };
  }
  rz::ProgressLine::Clock clock() {
    return [this] { return now; };
  }
};
int count_newlines(const std::vector<std::string>& v) {
  int n = 0;
  for (const auto& s : v)
    for (char c : s) n += c == '\n';
  return n;
}
}  // namespace

TEST_CASE("progress line: format has count, percent, rate, ETA and fields") {
  Fake f;
  rz::ProgressLine p("epoch 2/5", 100, "img", rz::ProgressMode::plain, 30, 0, f.sink(), f.clock());
  // 25 of 100 batches (800 images) in 10 s: 80 img/s, 30 s left.
  CHECK(p.format(25, 800, 10.0, "loss 0.5000") == "epoch 2/5 25/100  25%  80.0 img/s  ETA 30s  loss 0.5000");
  CHECK(p.format(100, 3200, 125.0, "") == "epoch 2/5 100/100 100%  25.6 img/s  in 2m05s");
  p.close();
  CHECK(f.out.empty());
  CHECK(rz::format_duration(7384) == "2h03m");
  CHECK(rz::format_duration(-1) == "?");
}

TEST_CASE("progress line: plain mode prints every N seconds or items, and a final line") {
  Fake f;
  {
    rz::ProgressLine p("prep", 1000, "img", rz::ProgressMode::plain, 30, 0, f.sink(), f.clock());
    for (int i = 1; i <= 1000; ++i) {
      f.now = i * 0.1;  // 100 s in all: lines at 30, 60, 90 s
      p.update(i);
    }
    CHECK(f.out.size() == 3);
    p.finish();
  }
  REQUIRE(f.out.size() == 4);
  CHECK(f.out[0].rfind("prep 300/1000  30%", 0) == 0);
  CHECK(f.out[3].rfind("prep 1000/1000 100%", 0) == 0);
  CHECK(count_newlines(f.out) == 4);
  for (const auto& s : f.out) CHECK(s.find('\r') == std::string::npos);

  Fake g;
  rz::ProgressLine q("train", 100, "img", rz::ProgressMode::plain, 1e9, 10, g.sink(), g.clock());
  for (int i = 1; i <= 100; ++i) q.update(i);
  CHECK(g.out.size() == 10);  // every 10 items
  q.close();                  // no final line: the caller prints a summary
  CHECK(g.out.size() == 10);
}

TEST_CASE("progress line: live mode redraws in place, throttled, and clears for other output") {
  Fake f;
  rz::ProgressLine p("predict", 50, "img", rz::ProgressMode::live, 30, 0, f.sink(), f.clock());
  for (int i = 1; i <= 49; ++i) {
    f.now = i * 0.01;  // 0.49 s: redraws at most every 0.1 s
    p.update(i);
  }
  CHECK(f.out.size() >= 4);
  CHECK(f.out.size() <= 6);
  for (const auto& s : f.out) {
    CHECK(s.front() == '\r');
    CHECK(s.find('\n') == std::string::npos);
  }
  const size_t before = f.out.size();
  p.clear();
  REQUIRE(f.out.size() == before + 1);
  CHECK(f.out.back() == "\r\033[K");
  p.update(50);  // the last item is always drawn
  p.finish();
  CHECK(f.out.back().back() == '\n');
  CHECK(f.out.back().find("50/50 100%") != std::string::npos);
  CHECK(count_newlines(f.out) == 1);
}

TEST_CASE("progress line: off prints nothing") {
  Fake f;
  {
    rz::ProgressLine p("x", 10, "img", rz::ProgressMode::off, 0, 1, f.sink(), f.clock());
    for (int i = 1; i <= 10; ++i) p.update(i);
  }
  CHECK(f.out.empty());
}
