#include "train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "data/csv.h"

namespace rz {

namespace html {
std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string svg_chart(const std::vector<Series>& series, const std::string& title, double w,
                      double h, bool unit_square) {
  const double ml = 42, mr = 10, mt = 22, mb = 28;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!unit_square) {
    x0 = y0 = std::numeric_limits<double>::infinity();
    x1 = y1 = -std::numeric_limits<double>::infinity();
    for (const auto& s : series)
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      }
    if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y1 = y0 + 1;
    const double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
  }
  auto px = [&](double x) { return ml + (x - x0) / (x1 - x0) * (w - ml - mr); };
  auto py = [&](double y) { return h - mb - (y - y0) / (y1 - y0) * (h - mt - mb); };
  std::string s = "<svg xmlns='http://www.w3.org/2000/svg' width='" + fmt("%.0f", w) + "' height='" +
                  fmt("%.0f", h) + "' font-family='sans-serif' font-size='10'>";
  s += "<text x='" + fmt("%.1f", w / 2) + "' y='14' text-anchor='middle' font-size='11'>" +
       escape(title) + "</text>";
  s += "<rect x='" + fmt("%.1f", ml) + "' y='" + fmt("%.1f", mt) + "' width='" +
       fmt("%.1f", w - ml - mr) + "' height='" + fmt("%.1f", h - mt - mb) +
       "' fill='none' stroke='#999'/>";
  for (int t = 0; t <= 4; ++t) {
    const double yv = y0 + (y1 - y0) * t / 4, xv = x0 + (x1 - x0) * t / 4;
    s += "<text x='" + fmt("%.1f", ml - 3) + "' y='" + fmt("%.1f", py(yv) + 3) +
         "' text-anchor='end'>" + fmt(unit_square ? "%.2f" : "%.3g", yv) + "</text>";
    s += "<text x='" + fmt("%.1f", px(xv)) + "' y='" + fmt("%.1f", h - mb + 12) +
         "' text-anchor='middle'>" + fmt(unit_square ? "%.2f" : "%.3g", xv) + "</text>";
  }
  if (unit_square)
    s += "<line x1='" + fmt("%.1f", px(0)) + "' y1='" + fmt("%.1f", py(0)) + "' x2='" +
         fmt("%.1f", px(1)) + "' y2='" + fmt("%.1f", py(1)) + "' stroke='#ccc' stroke-dasharray='3,3'/>";
  double legend_y = mt + 10;
  for (const auto& se : series) {
    std::string pts;
    for (size_t i = 0; i < se.x.size(); ++i) {
      if (!std::isfinite(se.y[i]) || !std::isfinite(se.x[i])) continue;
      pts += fmt("%.2f", px(se.x[i])) + "," + fmt("%.2f", py(se.y[i])) + " ";
    }
    s += "<polyline fill='none' stroke='" + se.color + "' stroke-width='1.5' points='" + pts + "'/>";
    if (!se.name.empty()) {
      s += "<text x='" + fmt("%.1f", ml + 6) + "' y='" + fmt("%.1f", legend_y) + "' fill='" +
           se.color + "'>" + escape(se.name) + "</text>";
      legend_y += 12;
    }
  }
  return s + "</svg>";
}
std::string page_start(const std::string& title, const std::string& extra_css) {
  return "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + escape(title) +
         "</title><style>body{font-family:sans-serif;margin:24px;color:#222}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
         "text-align:right}th{background:#f3f3f3}.l{text-align:left}"
         ".grid{display:flex;flex-wrap:wrap;gap:8px}pre{background:#f7f7f7;padding:8px}" +
         extra_css + "</style></head><body>";
}
}  // namespace html

using html::escape;
using html::fmt;
using html::Series;
using html::svg_chart;

std::string render_report_html(const ReportInput& in) {
  std::string h = html::page_start(in.title, "");
  h += "<h1>" + escape(in.title) + "</h1>";
  const EpochRecord* best = nullptr;
  for (const auto& e : in.epochs)
    if (e.epoch == in.best_epoch) best = &e;
  if (best) {
    h += "<h2>Validation AUC, best epoch " + std::to_string(best->epoch) + ": mean " +
         fmt("%.4f", best->mean_auc) + "</h2><table><tr><th class='l'>label</th><th>AUC</th></tr>";
    for (int l = 0; l < kNumRanzcrLabels; ++l) {
      const auto& a = best->auc[static_cast<size_t>(l)];
      h += "<tr><td class='l'>" + escape(std::string(kRanzcrLabels[static_cast<size_t>(l)])) +
           "</td><td>" + (a ? fmt("%.4f", *a) : std::string("undefined")) + "</td></tr>";
    }
    h += "</table>";
  }
  if (!in.epochs.empty()) {
    Series tl{"train loss", "#1f77b4", {}, {}}, vl{"validation loss", "#d62728", {}, {}};
    Series auc{"mean AUC", "#2ca02c", {}, {}};
    for (const auto& e : in.epochs) {
      tl.x.push_back(static_cast<double>(e.epoch));
      tl.y.push_back(e.train_loss);
      vl.x.push_back(static_cast<double>(e.epoch));
      vl.y.push_back(e.val_loss);
      auc.x.push_back(static_cast<double>(e.epoch));
      auc.y.push_back(e.mean_auc);
    }
    h += "<h2>Curves</h2><div class='grid'>" + svg_chart({tl, vl}, "loss per epoch", 420, 260, false) +
         svg_chart({auc}, "validation mean AUC per epoch", 420, 260, false) + "</div>";
    h += "<h2>Epochs</h2><table><tr><th>epoch</th><th>lr</th><th>train loss</th><th>val loss</th>"
         "<th>mean AUC</th><th>seconds</th></tr>";
    for (const auto& e : in.epochs)
      h += "<tr><td>" + std::to_string(e.epoch) + "</td><td>" + fmt("%.3g", e.lr) + "</td><td>" +
           fmt("%.4f", e.train_loss) + "</td><td>" + fmt("%.4f", e.val_loss) + "</td><td>" +
           fmt("%.4f", e.mean_auc) + "</td><td>" + fmt("%.1f", e.seconds) + "</td></tr>";
    h += "</table>";
  }
  if (!in.roc.empty()) {
    h += "<h2>ROC curves (best epoch)</h2><div class='grid'>";
    for (size_t l = 0; l < in.roc.size() && l < kRanzcrLabels.size(); ++l) {
      const auto& r = in.roc[l];
      std::string title = std::string(kRanzcrLabels[l]);
      if (r.positives == 0 || r.negatives == 0) title += " (undefined)";
      h += svg_chart({Series{"", "#1f77b4", r.fpr, r.tpr}}, title, 230, 210, true);
    }
    h += "</div>";
  }
  if (!in.config_toml.empty()) h += "<h2>Configuration</h2><pre>" + escape(in.config_toml) + "</pre>";
  return h + "</body></html>\n";
}

void write_report(const std::string& path, const ReportInput& in) {
  write_text_file_atomic(path, render_report_html(in));
}

}  // namespace rz
