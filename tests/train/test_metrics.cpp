#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/error.h"
#include "tests/data/temp_dir.h"
#include "train/metrics.h"
#include "train/predict.h"

namespace {

nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in(std::string(RZ_FIXTURES_DIR) + "/data/" + name);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", name, " (run tools/make_data_fixtures.py)");
  return nlohmann::json::parse(in);
}

std::vector<float> as_floats(const nlohmann::json& j) {
  std::vector<float> v;
  for (const auto& x : j) v.push_back(static_cast<float>(x.get<double>()));
  return v;
}

// Mann-Whitney by brute force over all (positive, negative) pairs.
double auc_by_pairs(const std::vector<float>& s, const std::vector<float>& y) {
  double wins = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i)
    for (size_t k = 0; k < s.size(); ++k)
      if (y[i] == 1.f && y[k] == 0.f) {
        pairs += 1;
        wins += s[i] > s[k] ? 1.0 : s[i] == s[k] ? 0.5 : 0.0;
      }
  return wins / pairs;
}

}  // namespace

TEST_CASE("metrics: roc_auc and roc_curve equal sklearn") {
  const nlohmann::json fx = load_fixture("auc_cases.json");
  REQUIRE(fx["cases"].size() >= 15);
  for (const auto& c : fx["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const std::vector<float> s = as_floats(c["scores"]);
    const std::vector<float> y = as_floats(c["labels"]);
    const auto n = static_cast<int64_t>(s.size());
    const std::optional<double> auc = rz::roc_auc(s.data(), y.data(), n);
    if (c["auc"].is_null()) {
      CHECK(!auc.has_value());
      continue;
    }
    REQUIRE(auc.has_value());
    CHECK(std::abs(*auc - c["auc"].get<double>()) <= 1e-9);

    const rz::RocCurve rc = rz::roc_curve(s.data(), y.data(), n);
    const auto fpr = c["fpr"].get<std::vector<double>>();
    const auto tpr = c["tpr"].get<std::vector<double>>();
    const auto thr = c["thresholds"].get<std::vector<double>>();
    REQUIRE(rc.fpr.size() == fpr.size());
    REQUIRE(rc.tpr.size() == tpr.size());
    REQUIRE(rc.thresholds.size() == thr.size() + 1);
    CHECK(std::isinf(rc.thresholds[0]));
    for (size_t k = 0; k < fpr.size(); ++k) {
      CHECK(std::abs(rc.fpr[k] - fpr[k]) <= 1e-12);
      CHECK(std::abs(rc.tpr[k] - tpr[k]) <= 1e-12);
      if (k + 1 < rc.thresholds.size()) CHECK(rc.thresholds[k + 1] == thr[k]);
    }
  }
}

TEST_CASE("metrics: roc_auc is the Mann-Whitney statistic with half credit for ties") {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> level(0, 9);
  std::bernoulli_distribution coin(0.3);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 5 + trial * 7;
    std::vector<float> s(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      s[static_cast<size_t>(i)] = static_cast<float>(level(gen)) * 0.1f;  // heavy ties
      y[static_cast<size_t>(i)] = coin(gen) ? 1.f : 0.f;
    }
    y[0] = 1.f;
    y[1] = 0.f;
    CHECK(*rz::roc_auc(s.data(), y.data(), n) ==
          doctest::Approx(auc_by_pairs(s, y)).epsilon(1e-12));
  }
  const std::vector<float> same(9, 0.25f), y{1, 0, 0, 1, 0, 1, 1, 0, 0};
  CHECK(*rz::roc_auc(same.data(), y.data(), 9) == 0.5);
  CHECK(!rz::roc_auc(same.data(), y.data(), 0).has_value());
}

TEST_CASE("metrics: auc_report leaves an undefined label out of the mean and warns") {
  const nlohmann::json fx = load_fixture("auc_multilabel.json");
  const std::vector<float> s = as_floats(fx["scores"]);
  const std::vector<float> y = as_floats(fx["labels"]);
  const int64_t n = fx["n"].get<int64_t>();
  REQUIRE(static_cast<int64_t>(s.size()) == n * 11);
  const rz::AucReport r = rz::auc_report(s.data(), y.data(), n);
  for (size_t j = 0; j < 11; ++j) {
    CAPTURE(j);
    const auto& want = fx["per_label"][j];
    if (want.is_null()) {
      CHECK(!r.per_label[j].has_value());
    } else {
      REQUIRE(r.per_label[j].has_value());
      CHECK(std::abs(*r.per_label[j] - want.get<double>()) <= 1e-9);
    }
  }
  CHECK(r.defined_labels == fx["defined_labels"].get<int>());
  CHECK(r.defined_labels == 10);
  CHECK(std::abs(r.mean - fx["mean"].get<double>()) <= 1e-9);
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0].find("'ETT - Abnormal'") != std::string::npos);
  CHECK(r.warnings[0].find("undefined") != std::string::npos);
  const std::string line = rz::format_auc_report(r);
  CHECK(line.find("(10/11 labels)") != std::string::npos);
  CHECK(line.find("ETT - Abnormal n/a") != std::string::npos);

  // No label defined: mean is NaN, with a warning per label and one overall.
  const std::vector<float> zeros(3 * 11, 0.f);
  const rz::AucReport none = rz::auc_report(s.data(), zeros.data(), 3);
  CHECK(none.defined_labels == 0);
  CHECK(std::isnan(none.mean));
  CHECK(none.warnings.size() == 12);
}

TEST_CASE("metrics: roc refuses NaN scores and non-binary labels") {
  const std::vector<float> s{0.1f, NAN, 0.3f}, y{0, 1, 0};
  CHECK_THROWS_WITH_AS(rz::roc_auc(s.data(), y.data(), 3), doctest::Contains("score 1 is NaN"),
                       rz::Error);
  const std::vector<float> s2{0.1f, 0.2f, 0.3f}, y2{0, 2, 1};
  CHECK_THROWS_WITH_AS(rz::roc_curve(s2.data(), y2.data(), 3),
                       doctest::Contains("label 1 must be 0 or 1, got 2"), rz::Error);
  std::vector<float> s11(2 * 11, 0.5f), y11(2 * 11, 0.f);
  y11[11 + 4] = 0.5f;
  CHECK_THROWS_WITH_AS(rz::auc_report(s11.data(), y11.data(), 2),
                       doctest::Contains("'NGT - Borderline'"), rz::Error);
  // One class only: the curve exists but its undefined axis is NaN, like sklearn.
  const std::vector<float> pos{1, 1, 1};
  const rz::RocCurve rc = rz::roc_curve(s2.data(), pos.data(), 3);
  CHECK(rc.negatives == 0);
  CHECK(std::isnan(rc.fpr[1]));
  CHECK(rc.tpr.back() == 1.0);
}

TEST_CASE("metrics: score_submission checks columns, UIDs and values") {
  rz::test::TempDir dir("score");
  const std::string header =
      "StudyInstanceUID,ETT - Abnormal,ETT - Borderline,ETT - Normal,NGT - Abnormal,NGT - Borderline,"
      "NGT - Incompletely Imaged,NGT - Normal,CVC - Abnormal,CVC - Borderline,CVC - Normal,"
      "Swan Ganz Catheter Present";
  const std::string truth = dir.write("truth.csv", header + ",PatientID\n"
                                                            "a,0,0,1,0,0,0,1,0,0,1,0,p1\n"
                                                            "b,0,1,0,0,0,0,0,0,1,0,1,p2\n");
  const std::string ok = dir.write("ok.csv", header + "\n"
                                                      "b,0.1,0.9,0.2,0,0,0,0.1,0,0.8,0.2,0.9\n"
                                                      "a,0.2,0.1,0.8,0,0,0,0.7,0,0.1,0.9,0.1\n");
  const auto r = rz::score_submission(ok, truth);
  CHECK(r.per_label[1].value() == 1.0);
  CHECK(!r.per_label[0].has_value());  // one class only
  const std::string missing_col = dir.write("m.csv", "StudyInstanceUID,ETT - Abnormal\na,0.5\nb,0.5\n");
  CHECK_THROWS_WITH_AS(rz::score_submission(missing_col, truth),
                       doctest::Contains("missing the column 'ETT - Borderline'"), rz::Error);
  const std::string unknown = dir.write("u.csv", header + "\n"
                                                          "a,0,0,0,0,0,0,0,0,0,0,0\n"
                                                          "zz,0,0,0,0,0,0,0,0,0,0,0\n");
  CHECK_THROWS_WITH_AS(rz::score_submission(unknown, truth), doctest::Contains("u.csv:3: StudyInstanceUID 'zz'"),
                       rz::Error);
  const std::string short_file = dir.write("s.csv", header + "\na,0,0,0,0,0,0,0,0,0,0,0\n");
  CHECK_THROWS_WITH_AS(rz::score_submission(short_file, truth), doctest::Contains("no prediction for StudyInstanceUID 'b'"),
                       rz::Error);
  const std::string bad_value = dir.write("v.csv", header + "\na,0,0,x,0,0,0,0,0,0,0,0\nb,0,0,0,0,0,0,0,0,0,0,0\n");
  CHECK_THROWS_WITH_AS(rz::score_submission(bad_value, truth), doctest::Contains("v.csv:2: column 'ETT - Normal': 'x'"),
                       rz::Error);
}
