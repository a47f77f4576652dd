#include <doctest/doctest.h>

#include <charconv>

#include "data/csv.h"
#include "data/ranzcr_csv.h"
#include "tests/data/temp_dir.h"

using rz::test::error_message;

namespace {

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

std::string label_columns() {
  std::string h;
  for (const auto name : rz::kRanzcrLabels) h += "," + std::string(name);
  return h;
}

const std::string kTrainHeader = "StudyInstanceUID" + label_columns() + ",PatientID";

// A train.csv row: `labels` is the 11 label values joined by commas.
std::string train_row(const std::string& uid, const std::string& labels,
                      const std::string& patient) {
  return uid + "," + labels + "," + patient + "\n";
}

const std::string kZeros = "0,0,0,0,0,0,0,0,0,0,0";

// Three studies, two patients; line 2..4.
std::string good_train_csv() {
  return kTrainHeader + "\n" + train_row("1.2.826.0.1", "0,0,1,0,0,0,1,0,0,1,0", "ec89415d1") +
         train_row("1.2.826.0.2", "0,1,0,0,0,0,0,1,0,0,1", "bf4c6da3c") +
         train_row("1.2.826.0.3", kZeros, "ec89415d1");
}

}  // namespace

TEST_CASE("data: ranzcr label names and order") {
  CHECK(rz::kRanzcrLabels.size() == 11);
  CHECK(rz::kRanzcrLabels[0] == "ETT - Abnormal");
  CHECK(rz::kRanzcrLabels[5] == "NGT - Incompletely Imaged");
  CHECK(rz::kRanzcrLabels[10] == "Swan Ganz Catheter Present");
  CHECK(rz::ranzcr_label_index("CVC - Borderline") == 8);
  CHECK(rz::ranzcr_label_index("cvc - borderline") == -1);
}

TEST_CASE("data: ranzcr train.csv is read") {
  const rz::RanzcrTrainSet set = rz::parse_ranzcr_train(good_train_csv(), "train.csv");
  REQUIRE(set.studies.size() == 3);
  CHECK(set.studies[0].uid == "1.2.826.0.1");
  CHECK(set.studies[0].patient_id == "ec89415d1");
  CHECK(set.studies[0].labels[2] == 1.f);
  CHECK(set.studies[0].labels[6] == 1.f);
  CHECK(set.studies[0].labels[0] == 0.f);
  CHECK(set.studies[1].labels[10] == 1.f);
  CHECK(set.studies[1].csv_line == 3);
  CHECK(set.studies[2].fold == -1);
  CHECK(!set.has_fold_column);
  CHECK(set.extra_columns.empty());
  CHECK(set.find("1.2.826.0.2") == 1);
  CHECK(set.find("nope") == -1);
  CHECK(set.index_by_uid.at("1.2.826.0.3") == 2);
  CHECK(set.patient_ids() == std::vector<std::string>{"ec89415d1", "bf4c6da3c", "ec89415d1"});
}

TEST_CASE("data: ranzcr train.csv keeps extra columns and reads a fold column") {
  const std::string text = "\xEF\xBB\xBF" + kTrainHeader + ",fold,source\r\n" + "u1," + kZeros +
                           ",p1,3,nih\r\n" + "u2,0.0,1.0,0,0,0,0,0,0,0,0,1,p2,0,\"a,b\"\r\n";
  const rz::RanzcrTrainSet set = rz::parse_ranzcr_train(text, "folds.csv");
  CHECK(set.has_fold_column);
  CHECK(set.extra_columns == std::vector<std::string>{"fold", "source"});
  REQUIRE(set.studies.size() == 2);
  CHECK(set.studies[0].fold == 3);
  CHECK(set.studies[1].fold == 0);
  CHECK(set.studies[1].extra == std::vector<std::string>{"0", "a,b"});
  CHECK(set.studies[1].labels[1] == 1.f);  // "1.0" accepted
  CHECK(set.studies[1].labels[0] == 0.f);  // "0.0" accepted
}

TEST_CASE("data: ranzcr train.csv errors name the file, the line and the value") {
  const rz::test::TempDir dir("ranzcr_train");
  struct Bad {
    const char* file;
    std::string text;
    std::vector<std::string> parts;  // each must appear in the message
  };
  std::string wrong_header = kTrainHeader;
  wrong_header.replace(wrong_header.find("ETT - Normal"), 12, "ETT - Nromal");
  std::string short_header = kTrainHeader.substr(0, kTrainHeader.rfind(','));
  const std::vector<Bad> cases = {
      {"wrong_header.csv",
       wrong_header + "\n" + train_row("u", kZeros, "p"),
       {":1:", "column 4", "'ETT - Nromal'", "expected 'ETT - Normal'"}},
      {"short_header.csv", short_header + "\n", {":1:", "header has 12 columns", "PatientID"}},
      {"label2.csv",
       kTrainHeader + "\n" + train_row("u1", kZeros, "p") +
           train_row("u2", "0,0,0,2,0,0,0,0,0,0,0", "p"),
       {":3:", "column 'NGT - Abnormal'", "'2'"}},
      {"labelx.csv",
       kTrainHeader + "\n" + train_row("u1", "0,0,0,0,0,0,0,0,0,0,x", "p"),
       {":2:", "column 'Swan Ganz Catheter Present'", "'x'"}},
      {"labelspace.csv",
       kTrainHeader + "\n" + train_row("u1", "0, 1,0,0,0,0,0,0,0,0,0", "p"),
       {":2:", "column 'ETT - Borderline'", "' 1'"}},
      {"dup.csv",
       kTrainHeader + "\n" + train_row("u1", kZeros, "p") + train_row("u2", kZeros, "p") +
           train_row("u1", kZeros, "q"),
       {":4:", "duplicate StudyInstanceUID 'u1'", "line 2"}},
      {"emptyuid.csv",
       kTrainHeader + "\n" + train_row("", kZeros, "p"),
       {":2:", "'StudyInstanceUID' is empty"}},
      {"emptypatient.csv",
       kTrainHeader + "\n" + train_row("u", kZeros, ""),
       {":2:", "'PatientID' is empty"}},
      {"badfold.csv",
       kTrainHeader + ",fold\nu," + kZeros + ",p,-1\n",
       {":2:", "column 'fold'", "'-1'"}},
      {"fields.csv", kTrainHeader + "\nu," + kZeros + "\n", {":2:", "expected 13 fields"}},
  };
  for (const Bad& bad : cases) {
    const std::string path = dir.write(bad.file, bad.text);
    const std::string msg = error_message([&] { rz::read_ranzcr_train(path); });
    CAPTURE(msg);
    CHECK(contains(msg, path));
    for (const auto& part : bad.parts) CHECK(contains(msg, part));
  }
}

TEST_CASE("data: ranzcr annotations are read, grouped by study, negatives clipped") {
  const rz::RanzcrTrainSet train = rz::parse_ranzcr_train(good_train_csv(), "train.csv");
  const std::string text =
      "StudyInstanceUID,label,data\n"
      "1.2.826.0.2,CVC - Abnormal,\"[[1487, 1279], [1477, 1168], [1420.5, -3.2]]\"\n"
      "1.2.826.0.1,ETT - Normal,\"[[ -0.5 , 12 ],[7e2,8.25]]\"\n"
      "1.2.826.0.2,Swan Ganz Catheter Present,\"[[1,2]]\"\n";
  const rz::RanzcrAnnotations ann = rz::parse_ranzcr_annotations(text, "ann.csv", train);
  CHECK(ann.count == 3);
  CHECK(ann.clipped_coordinates == 2);
  REQUIRE(ann.by_study.size() == 3);
  CHECK(ann.by_study[2].empty());
  REQUIRE(ann.by_study[0].size() == 1);
  const rz::Annotation& ett = ann.by_study[0][0];
  CHECK(ett.label == 2);
  CHECK(ett.csv_line == 3);
  REQUIRE(ett.points.size() == 2);
  CHECK(ett.points[0] == std::array<float, 2>{0.f, 12.f});
  CHECK(ett.points[1] == std::array<float, 2>{700.f, 8.25f});
  REQUIRE(ann.by_study[1].size() == 2);
  const rz::Annotation& cvc = ann.by_study[1][0];
  CHECK(cvc.uid == "1.2.826.0.2");
  CHECK(cvc.label == 7);
  REQUIRE(cvc.points.size() == 3);
  CHECK(cvc.points[0] == std::array<float, 2>{1487.f, 1279.f});
  CHECK(cvc.points[2] == std::array<float, 2>{1420.5f, 0.f});
  CHECK(ann.by_study[1][1].label == 10);
}

TEST_CASE("data: ranzcr annotation errors name the file, the line and the value") {
  const rz::test::TempDir dir("ranzcr_ann");
  const rz::RanzcrTrainSet train = rz::parse_ranzcr_train(good_train_csv(), "train.csv");
  const std::string header = "StudyInstanceUID,label,data\n";
  const std::string ok = "1.2.826.0.1,ETT - Normal,\"[[1, 2]]\"\n";
  struct Bad {
    const char* file;
    std::string text;
    std::vector<std::string> parts;
  };
  const std::string long_list = "\"[[1, 2], [" + std::string(400, 'x') + "]]\"";
  const std::vector<Bad> cases = {
      {"header.csv", "StudyInstanceUID,label,points\n", {":1:", "column 3", "'points'"}},
      {"uid.csv",
       header + ok + "1.2.999,ETT - Normal,\"[[1, 2]]\"\n",
       {":3:", "StudyInstanceUID '1.2.999' is not in train.csv"}},
      {"label.csv",
       header + ok + "1.2.826.0.1,ETT - Misplaced,\"[[1, 2]]\"\n",
       {":3:", "unknown label 'ETT - Misplaced'"}},
      {"single.csv",
       header + "1.2.826.0.1,ETT - Normal,\"[[1, 2], [3]]\"\n",
       {":2:", "column 'data'", "pair", "'[[1, 2], [3]]'"}},
      {"triple.csv",
       header + "1.2.826.0.1,ETT - Normal,\"[[1, 2, 3]]\"\n",
       {":2:", "third value", "'[[1, 2, 3]]'"}},
      {"open.csv",
       header + "1.2.826.0.1,ETT - Normal,\"[[1, 2]\"\n",
       {":2:", "expected ',' or ']'", "'[[1, 2]'"}},
      {"word.csv", header + ok + ok + "1.2.826.0.1,ETT - Normal,nan?\n", {":4:", "'nan?'"}},
      {"empty.csv", header + "1.2.826.0.1,ETT - Normal,[]\n", {":2:", "empty", "'[]'"}},
      {"trailing.csv",
       header + "1.2.826.0.1,ETT - Normal,\"[[1, 2]] x\"\n",
       {":2:", "after the point list"}},
      {"number.csv",
       header + "1.2.826.0.1,ETT - Normal,\"[[1, 2], [1e300, 3]]\"\n",
       {":2:", "not a finite float"}},
      {"long.csv",
       header + "1.2.826.0.1,ETT - Normal," + long_list + "\n",
       {":2:", "expected a number", "(412 chars)"}},
  };
  for (const Bad& bad : cases) {
    const std::string path = dir.write(bad.file, bad.text);
    const std::string msg = error_message([&] { rz::read_ranzcr_annotations(path, train); });
    CAPTURE(msg);
    CHECK(contains(msg, path));
    for (const auto& part : bad.parts) CHECK(contains(msg, part));
    CHECK(msg.size() < 400);  // long values are truncated
  }
}

TEST_CASE("data: ranzcr sample submission and submission writer") {
  const rz::test::TempDir dir("ranzcr_sub");
  const std::string sample_header = "StudyInstanceUID" + label_columns();
  const std::string sample =
      dir.write("sample_submission.csv", sample_header + "\n1.2.3," + kZeros + "\n1.2.4," + kZeros +
                                             "\n1.2.5," + kZeros + "\n");
  const std::vector<std::string> uids = rz::read_ranzcr_sample_submission(sample);
  CHECK(uids == std::vector<std::string>{"1.2.3", "1.2.4", "1.2.5"});

  // Errors: a train.csv header (extra PatientID), a duplicate UID.
  std::string path = dir.write("wrong.csv", kTrainHeader + "\n");
  std::string msg = error_message([&] { rz::read_ranzcr_sample_submission(path); });
  CHECK(contains(msg, path + ":1:"));
  CHECK(contains(msg, "'PatientID'"));
  path = dir.write("dup.csv", sample_header + "\na," + kZeros + "\na," + kZeros + "\n");
  msg = error_message([&] { rz::read_ranzcr_sample_submission(path); });
  CHECK(contains(msg, path + ":3:"));
  CHECK(contains(msg, "duplicate StudyInstanceUID 'a'"));

  // Writer: same header, shortest round-trip floats that read back exactly.
  std::vector<float> probs(uids.size() * 11);
  for (size_t i = 0; i < probs.size(); ++i) probs[i] = static_cast<float>(i) / 97.f;
  probs[3] = 1e-9f;
  probs[4] = 1.f;
  probs[5] = 0.f;
  const std::string out = (dir.path() / "submission.csv").string();
  rz::write_ranzcr_submission(out, uids, probs);
  CHECK(rz::read_ranzcr_sample_submission(out) == uids);
  const rz::CsvTable t = rz::read_csv(out);
  CHECK(t.header.size() == 12);
  REQUIRE(t.rows.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    for (size_t j = 0; j < 11; ++j) {
      const std::string& v = t.rows[i].fields[j + 1];
      float back = -1;
      std::from_chars(v.data(), v.data() + v.size(), back);
      CHECK(back == probs[i * 11 + j]);
    }
  }
  CHECK(t.rows[0].fields[5] == "1");
  CHECK(t.rows[0].fields[6] == "0");

  probs[7] = 1.5f;
  msg = error_message([&] { rz::format_ranzcr_submission(uids, probs); });
  CHECK(contains(msg, "row 0 (1.2.3) column 'CVC - Abnormal'"));
  CHECK(contains(msg, "1.5"));
  CHECK(contains(error_message([&] {
                   rz::format_ranzcr_submission(uids, std::span<const float>(probs).first(30));
                 }),
                 "33 probabilities"));
}
