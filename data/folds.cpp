#include "data/folds.h"

#include <algorithm>
#include <numeric>

#include "engine/error.h"

namespace rz {

std::vector<int> group_kfold(const std::vector<std::string>& groups, int n_splits) {
  RZ_CHECK(n_splits >= 2, "group_kfold: n_splits must be at least 2, got ", n_splits);

  // np.unique(groups, return_inverse=True): sorted distinct groups, and each
  // sample's index into them.
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return groups[a] < groups[b]; });
  std::vector<size_t> group_of(groups.size());
  std::vector<int64_t> count;  // samples per distinct group, in sorted group order
  for (size_t k = 0; k < order.size(); ++k) {
    if (k == 0 || groups[order[k]] != groups[order[k - 1]]) count.push_back(0);
    group_of[order[k]] = count.size() - 1;
    ++count.back();
  }
  const size_t n_groups = count.size();
  RZ_CHECK(static_cast<size_t>(n_splits) <= n_groups, "group_kfold: n_splits=", n_splits,
           " is greater than the number of groups: ", n_groups);

  // np.argsort(count, kind="stable")[::-1]: count descending, later group first on ties.
  std::vector<size_t> by_size(n_groups);
  std::iota(by_size.begin(), by_size.end(), size_t{0});
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](size_t a, size_t b) { return count[a] < count[b]; });
  std::reverse(by_size.begin(), by_size.end());

  // Largest group first into the lightest fold (first one on ties).
  std::vector<int64_t> fold_load(static_cast<size_t>(n_splits), 0);
  std::vector<int> fold_of_group(n_groups, 0);
  for (const size_t g : by_size) {
    const auto lightest = std::min_element(fold_load.begin(), fold_load.end());
    *lightest += count[g];
    fold_of_group[g] = static_cast<int>(lightest - fold_load.begin());
  }

  std::vector<int> folds(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) folds[i] = fold_of_group[group_of[i]];
  return folds;
}

std::vector<int64_t> fold_sizes(const std::vector<int>& folds, int n_splits) {
  RZ_CHECK(n_splits >= 1, "fold_sizes: n_splits must be positive, got ", n_splits);
  std::vector<int64_t> sizes(static_cast<size_t>(n_splits), 0);
  for (size_t i = 0; i < folds.size(); ++i) {
    RZ_CHECK(folds[i] >= 0 && folds[i] < n_splits, "fold_sizes: sample ", i, " has fold ", folds[i],
             ", outside [0, ", n_splits, ")");
    ++sizes[static_cast<size_t>(folds[i])];
  }
  return sizes;
}

}  // namespace rz
