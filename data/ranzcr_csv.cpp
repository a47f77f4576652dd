#include "data/ranzcr_csv.h"

#include <charconv>
#include <cmath>

#include "data/csv.h"
#include "data/paths.h"
#include "engine/error.h"

namespace rz {

namespace {

constexpr std::string_view kUidColumn = "StudyInstanceUID";
constexpr std::string_view kPatientColumn = "PatientID";

std::string join_names(const std::vector<std::string_view>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += names[i];
  }
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  return join_names(std::vector<std::string_view>(names.begin(), names.end()));
}

// StudyInstanceUID, the 11 labels, then `last` if not empty.
std::vector<std::string_view> label_header(std::string_view last) {
  std::vector<std::string_view> h{kUidColumn};
  h.insert(h.end(), kRanzcrLabels.begin(), kRanzcrLabels.end());
  if (!last.empty()) h.push_back(last);
  return h;
}

// The header must start with `expected`; more columns only when allow_extra.
void check_header(const CsvTable& t, const std::vector<std::string_view>& expected,
                  bool allow_extra, std::string_view what) {
  for (size_t c = 0; c < expected.size(); ++c) {
    if (c >= t.header.size())
      RZ_THROW(t.path, ":", t.header_line, ": ", what, " header has ", t.header.size(),
               " columns, expected ", expected.size(), " (", join_names(expected), "): got '",
               csv_excerpt(join_names(t.header), 200), "'");
    if (t.header[c] != expected[c])
      RZ_THROW(t.path, ":", t.header_line, ": ", what, " header column ", c + 1, " is '",
               csv_excerpt(t.header[c]), "', expected '", expected[c], "'");
  }
  if (!allow_extra && t.header.size() != expected.size())
    RZ_THROW(t.path, ":", t.header_line, ": ", what, " header has ", t.header.size(),
             " columns, expected ", expected.size(), ": unexpected column '",
             csv_excerpt(t.header[expected.size()]), "'");
}

float parse_label(const CsvTable& t, const CsvRecord& r, int col) {
  const std::string& v = r.fields[static_cast<size_t>(col)];
  if (v == "0" || v == "0.0") return 0.f;
  if (v == "1" || v == "1.0") return 1.f;
  RZ_THROW(t.path, ":", r.line, ": column '", t.header[static_cast<size_t>(col)],
           "': label must be 0 or 1, got '", csv_excerpt(v), "'");
}

int parse_fold(const CsvTable& t, const CsvRecord& r, int col) {
  const std::string& v = r.fields[static_cast<size_t>(col)];
  int fold = -1;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), fold);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || fold < 0)
    RZ_THROW(t.path, ":", r.line, ": column 'fold': expected a non-negative integer, got '",
             csv_excerpt(v), "'");
  return fold;
}

void check_not_empty(const CsvTable& t, const CsvRecord& r, int col) {
  if (r.fields[static_cast<size_t>(col)].empty())
    RZ_THROW(t.path, ":", r.line, ": column '", t.header[static_cast<size_t>(col)], "' is empty");
}

// The UID of a row names a file (train/<uid>.jpg): it must be one (see data/paths.h).
const std::string& checked_uid(const CsvTable& t, const CsvRecord& r) {
  check_not_empty(t, r, 0);
  const std::string& uid = r.fields[0];
  data::check_uid(uid, t.path + ":" + std::to_string(r.line));
  return uid;
}

// A small recursive-descent reader for "[[x, y], [x, y], ...]".
class PointListParser {
 public:
  PointListParser(std::string_view s, const std::string& where) : s_(s), where_(where) {}

  std::vector<std::array<float, 2>> parse(int64_t* clipped) {
    std::vector<std::array<float, 2>> points;
    expect('[', "expected '[' to open the point list");
    skip_ws();
    if (peek() == ']') fail("the point list is empty");
    for (;;) {
      expect('[', "expected '[' to open a point");
      std::array<float, 2> p{};
      p[0] = number(clipped);
      expect(',', "a point must be a pair [x, y]: expected ','");
      p[1] = number(clipped);
      skip_ws();
      if (peek() == ',') fail("a point must be a pair [x, y]: found a third value");
      expect(']', "expected ']' to close a point");
      points.push_back(p);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect(']', "expected ',' or ']' after a point");
      break;
    }
    skip_ws();
    if (i_ != s_.size()) fail("unexpected text after the point list");
    return points;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  void expect(char c, std::string_view problem) {
    skip_ws();
    if (peek() != c) fail(problem);
    ++i_;
  }
  float number(int64_t* clipped) {
    skip_ws();
    double v = 0;
    const char* begin = s_.data() + i_;
    const auto [end, ec] = std::from_chars(begin, s_.data() + s_.size(), v);
    if (ec != std::errc()) fail("expected a number");
    const float f = static_cast<float>(v);
    if (!std::isfinite(f)) fail("coordinate is not a finite float");
    i_ += static_cast<size_t>(end - begin);
    if (f < 0.f) {
      if (clipped) ++*clipped;
      return 0.f;
    }
    return f;
  }
  [[noreturn]] void fail(std::string_view problem) const {
    RZ_THROW(where_, ": column 'data': ", problem, " at character ", i_ + 1, " of '",
             csv_excerpt(s_), "'");
  }

  std::string_view s_;
  const std::string& where_;
  size_t i_ = 0;
};

}  // namespace

int ranzcr_label_index(std::string_view name) {
  for (size_t i = 0; i < kRanzcrLabels.size(); ++i)
    if (kRanzcrLabels[i] == name) return static_cast<int>(i);
  return -1;
}

std::vector<std::string> RanzcrTrainSet::patient_ids() const {
  std::vector<std::string> ids;
  ids.reserve(studies.size());
  for (const auto& s : studies) ids.push_back(s.patient_id);
  return ids;
}

int64_t RanzcrTrainSet::find(std::string_view uid) const {
  const auto it = index_by_uid.find(std::string(uid));
  return it == index_by_uid.end() ? -1 : static_cast<int64_t>(it->second);
}

// ---- train.csv ----

namespace {

RanzcrTrainSet train_from_table(const CsvTable& t) {
  const std::string& path = t.path;
  check_header(t, label_header(kPatientColumn), /*allow_extra=*/true, "train.csv");
  constexpr int kPatientCol = kNumRanzcrLabels + 1;

  RanzcrTrainSet set;
  set.path = path;
  int fold_col = -1;
  for (size_t c = kPatientCol + 1; c < t.header.size(); ++c) {
    const std::string& name = t.header[c];
    if (name.empty()) RZ_THROW(path, ":", t.header_line, ": header column ", c + 1, " is empty");
    // (a name repeating an earlier column is refused by parse_csv)
    if (name == "fold") fold_col = static_cast<int>(c);
    set.extra_columns.push_back(name);
  }
  set.has_fold_column = fold_col >= 0;

  set.studies.reserve(t.rows.size());
  set.index_by_uid.reserve(t.rows.size());
  for (const CsvRecord& r : t.rows) {
    RanzcrStudy s;
    s.uid = checked_uid(t, r);
    check_not_empty(t, r, kPatientCol);
    s.patient_id = r.fields[kPatientCol];
    for (int j = 0; j < kNumRanzcrLabels; ++j)
      s.labels[static_cast<size_t>(j)] = parse_label(t, r, j + 1);
    if (fold_col >= 0) s.fold = parse_fold(t, r, fold_col);
    s.csv_line = r.line;
    s.extra.assign(r.fields.begin() + kPatientCol + 1, r.fields.end());
    const auto [it, inserted] = set.index_by_uid.emplace(s.uid, set.studies.size());
    if (!inserted)
      RZ_THROW(path, ":", r.line, ": duplicate StudyInstanceUID '", csv_excerpt(s.uid),
               "' (first seen at line ", set.studies[it->second].csv_line, ")");
    set.studies.push_back(std::move(s));
  }
  return set;
}

}  // namespace

RanzcrTrainSet parse_ranzcr_train(std::string_view text, const std::string& path) {
  return train_from_table(parse_csv(text, path));
}

RanzcrTrainSet read_ranzcr_train(const std::string& path) {
  return train_from_table(read_csv(path));
}

// ---- train_annotations.csv ----

std::vector<std::array<float, 2>> parse_annotation_points(std::string_view data,
                                                          const std::string& where,
                                                          int64_t* clipped) {
  return PointListParser(data, where).parse(clipped);
}

namespace {

RanzcrAnnotations annotations_from_table(const CsvTable& t, const RanzcrTrainSet& train) {
  const std::string& path = t.path;
  check_header(t, {kUidColumn, "label", "data"}, /*allow_extra=*/false, "train_annotations.csv");
  RanzcrAnnotations out;
  out.path = path;
  out.by_study.resize(train.studies.size());
  for (const CsvRecord& r : t.rows) {
    const std::string& uid = checked_uid(t, r);
    const int64_t study = train.find(uid);
    if (study < 0)
      RZ_THROW(path, ":", r.line, ": StudyInstanceUID '", csv_excerpt(uid), "' is not in ",
               train.path);
    Annotation a;
    a.uid = uid;
    a.label = ranzcr_label_index(r.fields[1]);
    if (a.label < 0)
      RZ_THROW(path, ":", r.line, ": column 'label': unknown label '", csv_excerpt(r.fields[1]),
               "' (expected one of the 11 RANZCR label names)");
    a.points = parse_annotation_points(r.fields[2], path + ":" + std::to_string(r.line),
                                       &out.clipped_coordinates);
    a.csv_line = r.line;
    out.by_study[static_cast<size_t>(study)].push_back(std::move(a));
    ++out.count;
  }
  return out;
}

}  // namespace

RanzcrAnnotations parse_ranzcr_annotations(std::string_view text, const std::string& path,
                                           const RanzcrTrainSet& train) {
  return annotations_from_table(parse_csv(text, path), train);
}

RanzcrAnnotations read_ranzcr_annotations(const std::string& path, const RanzcrTrainSet& train) {
  return annotations_from_table(read_csv(path), train);
}

// ---- sample_submission.csv and submissions ----

namespace {

std::vector<std::string> sample_submission_from_table(const CsvTable& t) {
  const std::string& path = t.path;
  check_header(t, label_header(""), /*allow_extra=*/false, "sample_submission.csv");
  std::vector<std::string> uids;
  uids.reserve(t.rows.size());
  std::unordered_map<std::string, int64_t> line_by_uid;
  for (const CsvRecord& r : t.rows) {
    checked_uid(t, r);
    const auto [it, inserted] = line_by_uid.emplace(r.fields[0], r.line);
    if (!inserted)
      RZ_THROW(path, ":", r.line, ": duplicate StudyInstanceUID '", csv_excerpt(r.fields[0]),
               "' (first seen at line ", it->second, ")");
    uids.push_back(r.fields[0]);
  }
  return uids;
}

}  // namespace

std::vector<std::string> parse_ranzcr_sample_submission(std::string_view text,
                                                        const std::string& path) {
  return sample_submission_from_table(parse_csv(text, path));
}

std::vector<std::string> read_ranzcr_sample_submission(const std::string& path) {
  return sample_submission_from_table(read_csv(path));
}

std::string format_ranzcr_submission(const std::vector<std::string>& uids,
                                     std::span<const float> probs) {
  RZ_CHECK(probs.size() == uids.size() * kNumRanzcrLabels, "submission: ", uids.size(),
           " UIDs need ", uids.size() * kNumRanzcrLabels, " probabilities, got ", probs.size());
  std::string out = join_names(label_header("")) + "\n";
  out.reserve(out.size() + uids.size() * (uids.empty() ? 0 : uids[0].size() + 11 * 12));
  char buf[32];
  for (size_t i = 0; i < uids.size(); ++i) {
    if (uids[i].empty()) RZ_THROW("submission: row ", i, ": empty StudyInstanceUID");
    data::check_uid(uids[i], "submission: row " + std::to_string(i));
    out += csv_escape(uids[i]);
    for (size_t j = 0; j < kNumRanzcrLabels; ++j) {
      const float p = probs[i * kNumRanzcrLabels + j];
      if (!(p >= 0.f && p <= 1.f))  // also catches NaN
        RZ_THROW("submission: row ", i, " (", uids[i], ") column '", kRanzcrLabels[j],
                 "': probability must be in [0, 1], got ", p);
      const auto res = std::to_chars(buf, buf + sizeof(buf), p);
      out += ',';
      out.append(buf, res.ptr);
    }
    out += '\n';
  }
  return out;
}

void write_ranzcr_submission(const std::string& path, const std::vector<std::string>& uids,
                             std::span<const float> probs) {
  write_text_file_atomic(path, format_ranzcr_submission(uids, probs));
}

}  // namespace rz
