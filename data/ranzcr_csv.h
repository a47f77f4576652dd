// The RANZCR CLiP files: train.csv, train_annotations.csv, sample_submission.csv,
// and the submission writer.
//
// Every error names the file, the 1-based line, the column and the offending
// value ("train.csv:17: column 'ETT - Normal': label must be 0 or 1, got '2'").
//
// Choices where the competition files leave room:
//   - every StudyInstanceUID (train.csv, train_annotations.csv,
//     sample_submission.csv, and the UIDs a submission is written for) must be
//     a valid UID in the sense of data/paths.h (letters, digits, '.', '_',
//     '-'; no separators, no leading '.', no "..", 1..255 characters): it
//     names a file in the data folder, so "../x" or "/etc/passwd" is an
//     error naming the file, the line and the value;
//   - labels: "0", "1" and also "0.0", "1.0" (what pandas writes once a label
//     column has become float, e.g. after a merge) are accepted; anything else
//     (including spaces, "2", "yes", "") is an error;
//   - train.csv may carry extra columns after PatientID (e.g. a precomputed
//     `fold`); they are kept by name. A column named "fold" is parsed as a
//     non-negative integer and fills RanzcrStudy::fold;
//   - annotation points: every negative coordinate is clipped to 0 and counted
//     (the image stage checks the upper bounds, which need the image size);
//     an annotation with no points is an error;
//   - submissions write each probability as the shortest decimal that reads
//     back to the same float (std::to_chars): no two different floats collapse
//     into the same text, so the ranking, hence the AUC, is exactly preserved,
//     which a fixed "%.6f" would not guarantee for tiny probabilities.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rz {

inline constexpr int kNumRanzcrLabels = 11;

// The label columns, in train.csv / submission order.
inline constexpr std::array<std::string_view, kNumRanzcrLabels> kRanzcrLabels = {
    "ETT - Abnormal",
    "ETT - Borderline",
    "ETT - Normal",
    "NGT - Abnormal",
    "NGT - Borderline",
    "NGT - Incompletely Imaged",
    "NGT - Normal",
    "CVC - Abnormal",
    "CVC - Borderline",
    "CVC - Normal",
    "Swan Ganz Catheter Present",
};

// Index of a label name in kRanzcrLabels, or -1.
int ranzcr_label_index(std::string_view name);

struct RanzcrStudy {
  std::string uid;                               // StudyInstanceUID; the image is train/<uid>.jpg
  std::string patient_id;                        // PatientID (the GroupKFold group)
  std::array<float, kNumRanzcrLabels> labels{};  // 0 or 1, in kRanzcrLabels order
  int fold = -1;                                 // from a `fold` column when present, else -1
  int64_t csv_line = 0;                          // line in train.csv, for later error messages
  std::vector<std::string> extra;                // values of RanzcrTrainSet::extra_columns
};

struct RanzcrTrainSet {
  std::string path;
  std::vector<RanzcrStudy> studies;  // file order
  std::unordered_map<std::string, size_t> index_by_uid;
  std::vector<std::string> extra_columns;  // names of the columns after PatientID
  bool has_fold_column = false;

  // The PatientID of every study, in file order (the groups for group_kfold).
  std::vector<std::string> patient_ids() const;
  // Index of `uid` in studies, or -1.
  int64_t find(std::string_view uid) const;
};

// Reads train.csv: header `StudyInstanceUID,<11 labels>,PatientID[,extra...]`.
// Errors: wrong header, a label other than 0/1, an empty UID or PatientID, a
// duplicate UID (naming both lines), a bad fold value.
RanzcrTrainSet read_ranzcr_train(const std::string& path);
// The same from text already in memory (`path` names it in errors).
RanzcrTrainSet parse_ranzcr_train(std::string_view text, const std::string& path);

struct Annotation {
  std::string uid;
  int label = -1;                            // index into kRanzcrLabels
  std::vector<std::array<float, 2>> points;  // [x, y] in original image pixels, >= 0
  int64_t csv_line = 0;
};

struct RanzcrAnnotations {
  std::string path;
  // by_study[i]: the annotations of train.studies[i], in file order.
  std::vector<std::vector<Annotation>> by_study;
  int64_t count = 0;                // annotation rows read
  int64_t clipped_coordinates = 0;  // negative x or y values set to 0
};

// Reads train_annotations.csv: header `StudyInstanceUID,label,data`. Each
// UID must be a study of `train`; `label` one of kRanzcrLabels; `data` a list
// of [x, y] pairs such as "[[1487, 1279], [1477.5, -3]]".
RanzcrAnnotations read_ranzcr_annotations(const std::string& path, const RanzcrTrainSet& train);
RanzcrAnnotations parse_ranzcr_annotations(std::string_view text, const std::string& path,
                                           const RanzcrTrainSet& train);

// Parses an annotation point list ("[[x, y], ...]"); throws rz::Error naming
// `where` (e.g. "file.csv:12") and the offending text. Negative coordinates
// are clipped to 0 and counted in *clipped when given.
std::vector<std::array<float, 2>> parse_annotation_points(std::string_view data,
                                                          const std::string& where,
                                                          int64_t* clipped = nullptr);

// Reads sample_submission.csv: header `StudyInstanceUID,<11 labels>`; returns
// the UIDs in file order (the values are ignored). Empty or duplicate UIDs
// are errors.
std::vector<std::string> read_ranzcr_sample_submission(const std::string& path);
std::vector<std::string> parse_ranzcr_sample_submission(std::string_view text,
                                                        const std::string& path);

// A submission as text: the sample_submission header, then one row per UID
// with probs[i*11 + j] (row-major [N, 11]) in shortest round-trip form.
// Probabilities must be finite and in [0, 1].
std::string format_ranzcr_submission(const std::vector<std::string>& uids,
                                     std::span<const float> probs);
// Writes it to `path` atomically (temporary file, then rename).
void write_ranzcr_submission(const std::string& path, const std::vector<std::string>& uids,
                             std::span<const float> probs);

}  // namespace rz
