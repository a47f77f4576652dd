#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "engine/error.h"

namespace rz {

namespace {

// Sample indices by score descending (order within ties does not matter:
// every tie is consumed as one threshold). Validates scores and labels.
std::vector<int64_t> sorted_desc(const float* scores, const float* labels, int64_t n,
                                 int64_t* positives) {
  RZ_CHECK(n >= 0, "roc: negative sample count ", n);
  *positives = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(scores[i])) RZ_THROW("roc: score ", i, " is NaN");
    if (labels[i] == 1.f) {
      ++*positives;
    } else if (labels[i] != 0.f) {
      RZ_THROW("roc: label ", i, " must be 0 or 1, got ", labels[i]);
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

// Calls visit(threshold, tps, fps) after each run of equal scores, in
// descending threshold order (sklearn's _binary_clf_curve).
template <typename Visit>
void walk_thresholds(const float* scores, const float* labels, const std::vector<int64_t>& order,
                     Visit&& visit) {
  int64_t tps = 0, fps = 0;
  const size_t n = order.size();
  for (size_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    if (labels[i] == 1.f) {
      ++tps;
    } else {
      ++fps;
    }
    if (k + 1 == n || scores[order[k + 1]] != scores[i]) visit(scores[i], tps, fps);
  }
}

}  // namespace

std::optional<double> roc_auc(const float* scores, const float* labels, int64_t n) {
  int64_t pos = 0;
  const std::vector<int64_t> order = sorted_desc(scores, labels, n, &pos);
  const int64_t neg = n - pos;
  if (pos == 0 || neg == 0) return std::nullopt;
  // Trapezoids in count space: sum (dfps) * (tps + prev_tps) / 2, all exact
  // integers (twice the area) until the final division.
  double twice_area = 0;
  int64_t prev_tps = 0, prev_fps = 0;
  walk_thresholds(scores, labels, order, [&](float, int64_t tps, int64_t fps) {
    twice_area += static_cast<double>(fps - prev_fps) * static_cast<double>(tps + prev_tps);
    prev_tps = tps;
    prev_fps = fps;
  });
  return twice_area / (2.0 * static_cast<double>(pos) * static_cast<double>(neg));
}

RocCurve roc_curve(const float* scores, const float* labels, int64_t n) {
  RocCurve c;
  const std::vector<int64_t> order = sorted_desc(scores, labels, n, &c.positives);
  c.negatives = n - c.positives;
  c.thresholds.push_back(std::numeric_limits<double>::infinity());
  std::vector<int64_t> tps{0}, fps{0};
  walk_thresholds(scores, labels, order, [&](float s, int64_t tp, int64_t fp) {
    c.thresholds.push_back(s);
    tps.push_back(tp);
    fps.push_back(fp);
  });
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (size_t k = 0; k < tps.size(); ++k) {
    c.fpr.push_back(c.negatives > 0 ? static_cast<double>(fps[k]) / static_cast<double>(c.negatives)
                                    : nan);
    c.tpr.push_back(c.positives > 0 ? static_cast<double>(tps[k]) / static_cast<double>(c.positives)
                                    : nan);
  }
  return c;
}

AucReport auc_report(const float* scores, const float* labels, int64_t n,
                     const std::array<std::string_view, kNumRanzcrLabels>& names) {
  AucReport r;
  std::vector<float> s(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  double sum = 0;
  for (int j = 0; j < kNumRanzcrLabels; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      s[static_cast<size_t>(i)] = scores[i * kNumRanzcrLabels + j];
      y[static_cast<size_t>(i)] = labels[i * kNumRanzcrLabels + j];
    }
    std::optional<double> auc;
    try {
      auc = roc_auc(s.data(), y.data(), n);
    } catch (const Error& e) {
      RZ_THROW("auc_report: label '", names[static_cast<size_t>(j)], "': ", e.what());
    }
    r.per_label[static_cast<size_t>(j)] = auc;
    if (auc) {
      sum += *auc;
      ++r.defined_labels;
    } else {
      r.warnings.push_back(std::string("AUC of '") + std::string(names[static_cast<size_t>(j)]) +
                           "' is undefined: only one class among " + std::to_string(n) +
                           " samples; left out of the mean");
    }
  }
  r.mean = r.defined_labels > 0 ? sum / r.defined_labels : std::numeric_limits<double>::quiet_NaN();
  if (r.defined_labels == 0) r.warnings.push_back("no label has both classes: mean AUC is NaN");
  return r;
}

std::string format_auc_report(const AucReport& r,
                              const std::array<std::string_view, kNumRanzcrLabels>& names) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "mean AUC %.6f (%d/%d labels):", r.mean, r.defined_labels,
                kNumRanzcrLabels);
  std::string out = buf;
  for (size_t j = 0; j < names.size(); ++j) {
    out += j ? ", " : " ";
    out += names[j];
    if (r.per_label[j]) {
      std::snprintf(buf, sizeof(buf), " %.6f", *r.per_label[j]);
      out += buf;
    } else {
      out += " n/a";
    }
  }
  return out;
}

}  // namespace rz
