// Fuzzes the RANZCR file readers (data/ranzcr_csv.h). The first byte of the
// input picks the reader (its value modulo 4), the rest is the file:
//   0  train.csv                parse_ranzcr_train
//   1  train_annotations.csv    parse_ranzcr_annotations, against a fixed
//                               train set (UIDs 1.2.3, 1.2.4, a-b_c)
//   2  an annotation point list parse_annotation_points
//   3  sample_submission.csv    parse_ranzcr_sample_submission
// The readers of files (read_*) are parse_* on the file's bytes; the CSV
// target covers the file path.
//
// Invariants of a successful parse: labels are 0 or 1, UIDs are valid and
// unique and indexed, folds are >= 0 when the column is there, every
// annotation belongs to a study of the train set with a known label and at
// least one finite, non-negative point; clipped counts are never negative.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>

#include "data/paths.h"
#include "data/ranzcr_csv.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const rz::RanzcrTrainSet& fixed_train_set() {
  static const rz::RanzcrTrainSet set = rz::parse_ranzcr_train(
      "StudyInstanceUID,ETT - Abnormal,ETT - Borderline,ETT - Normal,NGT - Abnormal,"
      "NGT - Borderline,NGT - Incompletely Imaged,NGT - Normal,CVC - Abnormal,"
      "CVC - Borderline,CVC - Normal,Swan Ganz Catheter Present,PatientID\n"
      "1.2.3,0,0,1,0,0,0,1,0,0,1,0,p1\n"
      "1.2.4,0,0,0,0,0,0,0,0,0,1,0,p1\n"
      "a-b_c,1,0,0,0,0,0,0,0,0,0,1,p2\n",
      "fixed_train.csv");
  return set;
}

void check_points(const std::vector<std::array<float, 2>>& points) {
  FUZZ_REQUIRE(!points.empty(), "an accepted point list is empty");
  for (const auto& p : points)
    FUZZ_REQUIRE(std::isfinite(p[0]) && std::isfinite(p[1]) && p[0] >= 0.f && p[1] >= 0.f,
                 "point [", p[0], ", ", p[1], "]");
}

void check_train(const rz::RanzcrTrainSet& set) {
  FUZZ_REQUIRE(set.index_by_uid.size() == set.studies.size(), "index size");
  for (size_t i = 0; i < set.studies.size(); ++i) {
    const rz::RanzcrStudy& s = set.studies[i];
    FUZZ_REQUIRE(rz::data::is_valid_uid(s.uid), "accepted UID '", s.uid, "'");
    FUZZ_REQUIRE(!s.patient_id.empty(), "empty PatientID");
    FUZZ_REQUIRE(set.find(s.uid) == static_cast<int64_t>(i), "UID index");
    for (const float v : s.labels) FUZZ_REQUIRE(v == 0.f || v == 1.f, "label ", v);
    FUZZ_REQUIRE(set.has_fold_column ? s.fold >= 0 : s.fold == -1, "fold ", s.fold);
    FUZZ_REQUIRE(s.extra.size() == set.extra_columns.size(), "extra columns");
  }
  (void)set.patient_ids();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 4;
  const std::string_view text = rz::fuzz::as_text(data + 1, size - 1);
  const rz::RanzcrTrainSet& train = fixed_train_set();
  switch (mode) {
    case 0: {
      rz::RanzcrTrainSet set;
      if (rz::fuzz::rejects_only([&] { set = rz::parse_ranzcr_train(text, "train.csv"); }))
        check_train(set);
      break;
    }
    case 1: {
      rz::RanzcrAnnotations a;
      if (!rz::fuzz::rejects_only(
              [&] { a = rz::parse_ranzcr_annotations(text, "train_annotations.csv", train); }))
        break;
      FUZZ_REQUIRE(a.by_study.size() == train.studies.size(), "by_study size");
      FUZZ_REQUIRE(a.clipped_coordinates >= 0, "clipped ", a.clipped_coordinates);
      int64_t count = 0;
      for (size_t i = 0; i < a.by_study.size(); ++i)
        for (const rz::Annotation& an : a.by_study[i]) {
          FUZZ_REQUIRE(an.uid == train.studies[i].uid, "annotation of '", an.uid, "' filed under '",
                       train.studies[i].uid, "'");
          FUZZ_REQUIRE(an.label >= 0 && an.label < rz::kNumRanzcrLabels, "label ", an.label);
          check_points(an.points);
          ++count;
        }
      FUZZ_REQUIRE(count == a.count, "count ", a.count, " but ", count, " annotations");
      break;
    }
    case 2: {
      int64_t clipped = 0;
      std::vector<std::array<float, 2>> points;
      if (rz::fuzz::rejects_only(
              [&] { points = rz::parse_annotation_points(text, "fuzz.csv:2", &clipped); })) {
        check_points(points);
        FUZZ_REQUIRE(clipped >= 0 && clipped <= 2 * static_cast<int64_t>(points.size()), "clipped ",
                     clipped, " of ", points.size(), " points");
      }
      break;
    }
    default: {
      std::vector<std::string> uids;
      if (!rz::fuzz::rejects_only(
              [&] { uids = rz::parse_ranzcr_sample_submission(text, "sample_submission.csv"); }))
        break;
      std::unordered_set<std::string> seen;
      for (const std::string& u : uids) {
        FUZZ_REQUIRE(rz::data::is_valid_uid(u), "accepted UID '", u, "'");
        FUZZ_REQUIRE(seen.insert(u).second, "duplicate UID '", u, "'");
      }
      break;
    }
  }
  return 0;
}
