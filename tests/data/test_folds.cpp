#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/folds.h"
#include "engine/error.h"

namespace {

nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in(std::string(RZ_FIXTURES_DIR) + "/data/" + name);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", name, " (run tools/make_data_fixtures.py)");
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("data: group_kfold equals sklearn GroupKFold") {
  const nlohmann::json fx = load_fixture("group_kfold.json");
  REQUIRE(fx["cases"].size() >= 5);
  for (const auto& c : fx["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const auto groups = c["groups"].get<std::vector<std::string>>();
    const int k = c["n_splits"].get<int>();
    const std::vector<int> folds = rz::group_kfold(groups, k);
    CHECK(folds == c["folds"].get<std::vector<int>>());
  }
}

TEST_CASE("data: group_kfold keeps patients together and balances folds") {
  const nlohmann::json fx = load_fixture("group_kfold.json");
  const auto groups = fx["cases"][0]["groups"].get<std::vector<std::string>>();
  REQUIRE(groups.size() == 300);
  for (const int k : {2, 3, 5, 7}) {
    CAPTURE(k);
    const std::vector<int> folds = rz::group_kfold(groups, k);
    CHECK(folds == rz::group_kfold(groups, k));  // deterministic
    std::map<std::string, int> fold_of;
    std::map<std::string, int64_t> size_of;
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto [it, inserted] = fold_of.emplace(groups[i], folds[i]);
      CHECK(it->second == folds[i]);  // no patient in two folds
      ++size_of[groups[i]];
    }
    int64_t largest_group = 0;
    for (const auto& [g, n] : size_of) largest_group = std::max(largest_group, n);
    const std::vector<int64_t> sizes = rz::fold_sizes(folds, k);
    const auto [lo, hi] = std::minmax_element(sizes.begin(), sizes.end());
    CHECK(*lo > 0);
    // Greedy largest-first keeps the spread within the largest group.
    CHECK(*hi - *lo <= largest_group);
  }
  // 300 samples with groups of at most 30 split evenly into 5.
  CHECK(rz::fold_sizes(rz::group_kfold(groups, 5), 5) == std::vector<int64_t>(5, 60));
}

TEST_CASE("data: group_kfold refuses impossible splits") {
  const std::vector<std::string> groups{"a", "b", "a", "c"};
  CHECK_THROWS_AS(rz::group_kfold(groups, 1), rz::Error);
  CHECK_THROWS_WITH_AS(rz::group_kfold(groups, 4),
                       doctest::Contains("n_splits=4 is greater than the number of groups: 3"),
                       rz::Error);
  CHECK(rz::group_kfold(groups, 3).size() == 4);
  CHECK_THROWS_AS(rz::fold_sizes({0, 3}, 3), rz::Error);
}
