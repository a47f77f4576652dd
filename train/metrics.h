// Classification metrics with scikit-learn's semantics: ROC AUC and the ROC
// curve for binary labels, and the RANZCR score (mean of the per-label AUCs).
//
// Inputs are float scores (logits or probabilities: only their order matters)
// and float labels that must be exactly 0 or 1; a NaN score or another label
// value throws rz::Error naming the index and the value. All arithmetic is in
// double on exact counts, so results match sklearn to rounding (about 1e-15).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/ranzcr_csv.h"

namespace rz {

// Area under the ROC curve, = sklearn.metrics.roc_auc_score(labels, scores):
// the trapezoid rule over the distinct score thresholds, i.e. the Mann-Whitney
// U statistic / (P*N) with half credit for tied (positive, negative) pairs.
// nullopt when only one class is present (or n == 0): AUC is undefined.
std::optional<double> roc_auc(const float* scores, const float* labels, int64_t n);

// sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False):
// thresholds[0] = +inf with (fpr, tpr) = (0, 0), then one point per distinct
// score, thresholds descending. When there are no negatives fpr is all NaN,
// when there are no positives tpr is all NaN (sklearn warns and does the same).
struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;
  int64_t positives = 0, negatives = 0;
};
RocCurve roc_curve(const float* scores, const float* labels, int64_t n);

// Per-label AUCs of [n, 11] row-major scores against [n, 11] labels, and
// their mean over the labels where AUC is defined. A label with one class
// only is left out of the mean and named in `warnings`; with no defined label
// the mean is NaN.
struct AucReport {
  std::array<std::optional<double>, kNumRanzcrLabels> per_label{};
  double mean = 0;
  int defined_labels = 0;
  std::vector<std::string> warnings;
};
AucReport auc_report(const float* scores, const float* labels, int64_t n,
                     const std::array<std::string_view, kNumRanzcrLabels>& names = kRanzcrLabels);

// One line for logs: "mean AUC 0.912345 (11/11 labels): ETT - Abnormal 0.9..., ...".
std::string format_auc_report(
    const AucReport& r,
    const std::array<std::string_view, kNumRanzcrLabels>& names = kRanzcrLabels);

}  // namespace rz
