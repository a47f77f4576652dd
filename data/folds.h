// GroupKFold: split samples into folds so that no group (patient) is in two
// folds, with scikit-learn's assignment so folds match a Python pipeline
// sample for sample.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rz {

// The fold (0 .. n_splits-1) of every sample, equal to the test fold that
// sklearn.model_selection.GroupKFold(n_splits) (shuffle=False; sklearn >= 1.6,
// whose group order is a stable sort) gives it. The algorithm:
//   1. the distinct groups, sorted (byte order = numpy's code-point order for
//      UTF-8), are counted;
//   2. they are visited by count descending; among equal counts the group that
//      sorts LAST comes first (sklearn reverses a stable ascending argsort);
//   3. each goes to the fold with the fewest samples so far, the lowest fold
//      index on ties (np.argmin).
// Deterministic; throws rz::Error when n_splits < 2 or n_splits exceeds the
// number of distinct groups.
std::vector<int> group_kfold(const std::vector<std::string>& groups, int n_splits);

// Samples per fold for a fold assignment with folds in [0, n_splits).
std::vector<int64_t> fold_sizes(const std::vector<int>& folds, int n_splits);

}  // namespace rz
