// The demo report: every section is there, the best run of each AUC row is marked,
// the sample images are embedded PNGs that decode back to the same pixels, and the
// file references nothing outside itself.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "data/image.h"
#include "train/demo_report.h"

namespace {
int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

std::string unbase64(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  int bits = 0, acc = 0;
  for (char c : s) {
    const int v = val(c);
    if (v < 0) break;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

rz::data::Image ramp(int64_t w, int64_t h, int channels, int salt) {
  rz::data::Image im;
  im.width = w, im.height = h, im.channels = channels;
  im.pixels.resize(static_cast<size_t>(w * h * channels));
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<uint8_t>((i * 7 + salt) % 251);
  return im;
}
}  // namespace

TEST_CASE("demo report: sections, best-of-row marks, embedded samples") {
  rz::DemoReportInput in;
  in.title = "demo <test>";
  in.setup = "3 studies";
  const char* names[] = {"teacher", "control student", "distilled student", "fine-tuned student"};
  for (int r = 0; r < 4; ++r) {
    rz::DemoReportRun run;
    run.name = names[r];
    run.input = "plain";
    for (size_t l = 0; l < rz::kRanzcrLabels.size(); ++l) run.auc[l] = 0.5 + 0.1 * r + 0.001 * double(l);
    run.auc[3] = std::nullopt;  // undefined on this fold
    run.mean_auc = 0.5 + 0.1 * r;
    run.studies = 40;
    run.roc.assign(rz::kRanzcrLabels.size(), rz::RocCurve{{0, 0.2, 1}, {0, 0.7, 1}, {2, 0.5, 0}, 4, 36});
    for (int e = 1; e <= 3; ++e) {
      rz::EpochRecord rec;
      rec.epoch = e;
      rec.train_loss = 0.7 / e;
      rec.mean_auc = 0.6 + 0.05 * e;
      run.epochs.push_back(rec);
    }
    run.seconds = 10.0 * (r + 1);
    in.runs.push_back(run);
  }
  in.runs[0].seconds_logged = true;  // trained by an earlier run
  // A tie in one row: both tied runs are marked.
  in.runs[2].auc[0] = in.runs[3].auc[0];
  in.other_seconds = {{"synth + prep", 5.0}, {"evaluation", 2.0}};
  in.samples.push_back({"1.2.3", ramp(24, 20, 3, 1), ramp(24, 20, 1, 2), {}});
  in.samples[0].labels[2] = 1.0f;  // ETT - Normal
  const std::string h = rz::render_demo_report_html(in);

  for (const char* id : {"id='setup'", "id='auc'", "id='roc'", "id='curves'", "id='time'", "id='samples'"})
    CHECK_MESSAGE(h.find(id) != std::string::npos, id);
  CHECK(h.find("demo &lt;test&gt;") != std::string::npos);  // escaped
  // 12 rows (11 labels and the mean) with one mark each, except label 3 (undefined
  // for every run: no mark) and label 0 (a tie: two marks).
  CHECK(count(h, "class='best'") == 11 + 1);
  CHECK(count(h, "&#9733;</td>") == 11 + 1);
  // 11 ROC charts + 2 curve charts + the time bars.
  CHECK(count(h, "<svg") == 11 + 2 + 1);
  CHECK(count(h, "<polyline") == 11 * 4 + 2 * 4);
  CHECK(h.find("total 107.0 s") != std::string::npos);
  CHECK(h.find("teacher (logged epochs)") != std::string::npos);
  CHECK(h.find("control student (logged epochs)") == std::string::npos);
  CHECK(h.find("ETT - Normal") != std::string::npos);
  CHECK(h.find("<script") == std::string::npos);
  CHECK(count(h, "http") == count(h, "xmlns='http://www.w3.org/2000/svg'"));  // nothing external

  // Both sample images decode back to their pixels.
  int images = 0;
  for (size_t p = h.find("base64,"); p != std::string::npos; p = h.find("base64,", p + 1)) {
    const size_t end = h.find('\'', p);
    const std::string png = unbase64(h.substr(p + 7, end - p - 7));
    const auto img = rz::data::decode_image_memory(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(png.data()), png.size()), "embedded");
    const auto& want = images == 0 ? in.samples[0].annotated : in.samples[0].plain;
    CHECK(img.width == want.width);
    CHECK(img.channels == want.channels);
    CHECK(img.pixels == want.pixels);
    ++images;
  }
  CHECK(images == 2);
}
