#include "train/demo_report.h"

#include <algorithm>
#include <cmath>

#include "data/csv.h"

namespace rz {

namespace {
using html::escape;
using html::fmt;
using html::Series;
using html::svg_chart;

constexpr const char* kRunColors[] = {"#d62728", "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"};

const char* run_color(size_t i) {
  return kRunColors[i % (sizeof kRunColors / sizeof kRunColors[0])];
}

std::string base64(const std::string& bytes) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                       uint32_t(uint8_t(bytes[i + 2]));
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += t[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    out += t[v >> 18], out += t[(v >> 12) & 63], out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8);
    out += t[v >> 18], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += '=';
  }
  return out;
}

std::string img_tag(const data::Image& img, const std::string& alt) {
  return "<img alt='" + escape(alt) + "' width='" + std::to_string(img.width) + "' height='" +
         std::to_string(img.height) + "' src='data:image/png;base64," + base64(data::encode_png(img, alt)) + "'/>";
}

// A horizontal bar per (name, seconds).
std::string svg_bars(const std::vector<std::pair<std::string, double>>& bars, double w) {
  const double row = 20, mr = 60;
  size_t longest = 0;
  for (const auto& b : bars) longest = std::max(longest, b.first.size());
  const double ml = std::max(150.0, 6.5 * static_cast<double>(longest) + 12);  // 11 px sans: ~6.5 px a character
  const double h = row * static_cast<double>(bars.size()) + 10;
  double top = 1e-9;
  for (const auto& b : bars) top = std::max(top, b.second);
  std::string s = "<svg xmlns='http://www.w3.org/2000/svg' width='" + fmt("%.0f", w) + "' height='" +
                  fmt("%.0f", h) + "' font-family='sans-serif' font-size='11'>";
  for (size_t i = 0; i < bars.size(); ++i) {
    const double y = 5 + row * static_cast<double>(i);
    const double len = (w - ml - mr) * bars[i].second / top;
    s += "<text x='" + fmt("%.0f", ml - 6) + "' y='" + fmt("%.1f", y + 13) + "' text-anchor='end'>" +
         escape(bars[i].first) + "</text>";
    s += "<rect x='" + fmt("%.0f", ml) + "' y='" + fmt("%.1f", y + 3) + "' width='" + fmt("%.1f", len) +
         "' height='" + fmt("%.0f", row - 6) + "' fill='" + run_color(i) + "'/>";
    s += "<text x='" + fmt("%.1f", ml + len + 4) + "' y='" + fmt("%.1f", y + 13) + "'>" +
         fmt("%.1f s", bars[i].second) + "</text>";
  }
  return s + "</svg>";
}
}  // namespace

std::string render_demo_report_html(const DemoReportInput& in) {
  std::string h = html::page_start(
      in.title,
      "body{max-width:1400px}td.best{font-weight:bold;background:#e6f4e6}.sample{display:inline-block;"
      "margin:0 14px 14px 0;vertical-align:top;font-size:12px}.sample img{image-rendering:pixelated;"
      "margin-right:4px}");
  h += "<h1>" + escape(in.title) + "</h1>";
  if (!in.setup.empty()) h += "<p id='setup'>" + escape(in.setup) + "</p>";

  // The AUC table: one column per run, the best of each row marked.
  h += "<h2 id='auc'>Held-out AUC per label</h2><table><tr><th class='l'>label</th>";
  for (const auto& r : in.runs) h += "<th>" + escape(r.name) + "<br><small>" + escape(r.input) + "</small></th>";
  h += "</tr>";
  auto row = [&](const std::string& label, const std::vector<std::optional<double>>& v) {
    double best = -1;
    for (const auto& a : v)
      if (a) best = std::max(best, *a);
    h += "<tr><td class='l'>" + escape(label) + "</td>";
    for (const auto& a : v) {
      const bool is_best = a && *a == best;
      h += std::string(is_best ? "<td class='best'>" : "<td>") + (a ? fmt("%.3f", *a) : std::string("-")) +
           (is_best ? " &#9733;" : "") + "</td>";
    }
    h += "</tr>";
  };
  for (size_t l = 0; l < kRanzcrLabels.size(); ++l) {
    std::vector<std::optional<double>> v;
    for (const auto& r : in.runs) v.push_back(r.auc[l]);
    row(std::string(kRanzcrLabels[l]), v);
  }
  {
    std::vector<std::optional<double>> v;
    for (const auto& r : in.runs) v.push_back(r.mean_auc);
    row("mean AUC", v);
  }
  h += "<tr><td class='l'>validation studies</td>";
  for (const auto& r : in.runs) h += "<td>" + std::to_string(r.studies) + "</td>";
  h += "</tr></table><p><small>&#9733; the best run of each row. The teacher reads the annotated images "
       "(its own input), the students the plain images of the same fold.</small></p>";

  // ROC curves per label, the runs overlaid.
  h += "<h2 id='roc'>ROC curves per label</h2><div class='grid'>";
  for (size_t l = 0; l < kRanzcrLabels.size(); ++l) {
    std::vector<Series> series;
    for (size_t i = 0; i < in.runs.size(); ++i) {
      if (l >= in.runs[i].roc.size()) continue;
      const auto& c = in.runs[i].roc[l];
      series.push_back(Series{l == 0 ? in.runs[i].name : "", run_color(i), c.fpr, c.tpr});
    }
    h += svg_chart(series, std::string(kRanzcrLabels[l]), 250, 230, true);
  }
  h += "</div>";

  // Loss and mean AUC per epoch.
  std::vector<Series> loss, auc;
  for (size_t i = 0; i < in.runs.size(); ++i) {
    Series tl{in.runs[i].name, run_color(i), {}, {}}, ma{in.runs[i].name, run_color(i), {}, {}};
    for (const auto& e : in.runs[i].epochs) {
      tl.x.push_back(static_cast<double>(e.epoch));
      tl.y.push_back(e.train_loss);
      ma.x.push_back(static_cast<double>(e.epoch));
      ma.y.push_back(e.mean_auc);
    }
    loss.push_back(tl);
    auc.push_back(ma);
  }
  h += "<h2 id='curves'>Training curves</h2><div class='grid'>" +
       svg_chart(loss, "training loss per epoch", 460, 280, false) +
       svg_chart(auc, "validation mean AUC per epoch", 460, 280, false) + "</div>";

  // Wall time per stage.
  std::vector<std::pair<std::string, double>> bars;
  double total = 0;
  for (const auto& r : in.runs)
    bars.emplace_back(r.name + (r.seconds_logged ? " (logged epochs)" : ""), r.seconds), total += r.seconds;
  for (const auto& o : in.other_seconds) bars.push_back(o), total += o.second;
  h += "<h2 id='time'>Wall time per stage</h2>" + svg_bars(bars, 760) + "<p>total " + fmt("%.1f s", total) +
       "</p>";

  // Sample inputs.
  if (!in.samples.empty()) {
    h += "<h2 id='samples'>Sample inputs: the teacher's annotated image, the student's plain image</h2>";
    for (const auto& s : in.samples) {
      std::string labels;
      for (size_t l = 0; l < kRanzcrLabels.size(); ++l)
        if (s.labels[l] > 0.5f) labels += (labels.empty() ? "" : "<br>") + escape(std::string(kRanzcrLabels[l]));
      h += "<div class='sample'>" + img_tag(s.annotated, "annotated " + s.uid) + img_tag(s.plain, "plain " + s.uid) +
           "<br>" + (labels.empty() ? std::string("no device") : labels) + "</div>";
    }
  }
  return h + "</body></html>\n";
}

void write_demo_report(const std::string& path, const DemoReportInput& in) {
  write_text_file_atomic(path, render_demo_report_html(in));
}

}  // namespace rz
