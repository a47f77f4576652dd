#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "data/image.h"
#include "data/ranzcr_csv.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"

namespace fs = std::filesystem;
using rz::data::SynthOptions;
using rz::data::SynthSample;
using rz::data::SynthSplit;
using rz::test::TempDir;

namespace {

std::string first_line(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string line;
  std::getline(in, line);
  return line;
}

SynthOptions small_options(const fs::path& dir, uint64_t seed) {
  SynthOptions o;
  o.out_dir = dir.string();
  o.n = 40;
  o.n_test = 10;
  o.size = 128;
  o.seed = seed;
  return o;
}

bool is_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int label_kind(int label) {
  return label < 3 ? 0 : (label < 7 ? 1 : (label < 10 ? 2 : 3));
}

}  // namespace

TEST_CASE("synth: run_synth writes the RANZCR layout and it reads back") {
  TempDir dir("synth");
  const SynthOptions o = small_options(dir.path(), 7);
  int64_t last_done = -1, last_total = -1;
  const rz::data::SynthReport rep = rz::data::run_synth(o, [&](int64_t done, int64_t total) {
    CHECK(done > last_done);
    last_done = done, last_total = total;
  });
  CHECK(last_done == 50);
  CHECK(last_total == 50);

  CHECK(first_line(dir.path() / "train.csv") ==
        "StudyInstanceUID,ETT - Abnormal,ETT - Borderline,ETT - Normal,NGT - Abnormal,"
        "NGT - Borderline,NGT - Incompletely Imaged,NGT - Normal,CVC - Abnormal,"
        "CVC - Borderline,CVC - Normal,Swan Ganz Catheter Present,PatientID");
  CHECK(first_line(dir.path() / "train_annotations.csv") == "StudyInstanceUID,label,data");
  CHECK(first_line(dir.path() / "sample_submission.csv") ==
        "StudyInstanceUID,ETT - Abnormal,ETT - Borderline,ETT - Normal,NGT - Abnormal,"
        "NGT - Borderline,NGT - Incompletely Imaged,NGT - Normal,CVC - Abnormal,"
        "CVC - Borderline,CVC - Normal,Swan Ganz Catheter Present");

  const rz::RanzcrTrainSet train = rz::read_ranzcr_train((dir.path() / "train.csv").string());
  REQUIRE(train.studies.size() == 40);
  // The reader rejects annotation UIDs missing from train.csv.
  const rz::RanzcrAnnotations ann =
      rz::read_ranzcr_annotations((dir.path() / "train_annotations.csv").string(), train);
  const std::vector<std::string> test_uids =
      rz::read_ranzcr_sample_submission((dir.path() / "sample_submission.csv").string());
  const rz::RanzcrTrainSet test_labels =
      rz::read_ranzcr_train((dir.path() / "test_labels.csv").string());
  REQUIRE(test_uids.size() == 10);
  REQUIRE(test_labels.studies.size() == 10);
  CHECK(ann.count == rep.annotations);
  CHECK(ann.clipped_coordinates == rep.negative_coordinates);
  CHECK(rep.annotated_images > 0);

  std::map<std::string, int> per_patient;
  int annotated = 0;
  for (size_t i = 0; i < train.studies.size(); ++i) {
    const rz::RanzcrStudy& s = train.studies[i];
    CAPTURE(s.uid);
    CHECK(s.uid.rfind("1.2.826.0.1.3680043.8.498.", 0) == 0);
    CHECK(s.uid.size() <= 64);  // a DICOM UID's limit
    CHECK(s.patient_id.size() == 9);
    CHECK(is_hex(s.patient_id));
    ++per_patient[s.patient_id];
    // Every annotation says which status its device has, and that status is a positive label.
    for (const rz::Annotation& a : ann.by_study[i]) {
      CHECK(s.labels[static_cast<size_t>(a.label)] == 1.f);
      CHECK(a.points.size() >= 5);
      CHECK(a.points.size() <= 30);
      for (const auto& p : a.points) {
        CHECK(p[0] >= 0.f);  // negatives were clipped by the reader
        CHECK(p[0] <= 127.f);
        CHECK(p[1] <= 127.f);
      }
    }
    annotated += !ann.by_study[i].empty();
    const rz::data::Image img =
        rz::data::decode_image((dir.path() / "train" / (s.uid + ".jpg")).string(), 1);
    CHECK(img.height == 128);
    CHECK(img.width == 128);
    CHECK(img.channels == 1);
  }
  CHECK(annotated == rep.annotated_images);
  // Several images per patient.
  CHECK(per_patient.size() < 30);
  CHECK(per_patient.size() == static_cast<size_t>(rep.train_patients));
  int max_images = 0;
  for (const auto& [id, k] : per_patient) max_images = std::max(max_images, k);
  CHECK(max_images >= 2);
  CHECK(max_images <= 6);

  std::set<std::string> train_uids;
  for (const auto& s : train.studies) train_uids.insert(s.uid);
  for (size_t i = 0; i < test_uids.size(); ++i) {
    CHECK(train_uids.count(test_uids[i]) == 0);
    CHECK(test_labels.studies[i].uid == test_uids[i]);
    CHECK(fs::exists(dir.path() / "test" / (test_uids[i] + ".jpg")));
  }

  // What run_synth wrote is what render_synth_sample renders (up to the JPEG loss).
  for (int64_t i : {0, 17, 39}) {
    const SynthSample s = rz::data::render_synth_sample(o, SynthSplit::train, i);
    const rz::RanzcrStudy& row = train.studies[static_cast<size_t>(i)];
    CHECK(s.uid == row.uid);
    CHECK(s.patient_id == row.patient_id);
    CHECK(s.labels == row.labels);
    const rz::data::Image img =
        rz::data::decode_image((dir.path() / "train" / (s.uid + ".jpg")).string(), 1);
    double diff = 0;
    for (size_t k = 0; k < img.pixels.size(); ++k)
      diff += std::abs(img.pixels[k] - s.image.pixels[k]);
    CHECK(diff / static_cast<double>(img.pixels.size()) < 3.0);
  }
  const SynthSample t = rz::data::render_synth_sample(o, SynthSplit::test, 3);
  CHECK(t.uid == test_uids[3]);
  CHECK(t.labels == test_labels.studies[3].labels);
  CHECK_FALSE(t.annotated);
}

TEST_CASE("synth: the same seed gives the same bytes, whatever the threads") {
  TempDir a("synth_a"), b("synth_b"), c("synth_c");
  SynthOptions oa = small_options(a.path(), 11), ob = small_options(b.path(), 11),
               oc = small_options(c.path(), 12);
  for (SynthOptions* o : {&oa, &ob, &oc}) o->n = 12, o->n_test = 3, o->size = 64;
  oa.threads = 1;
  ob.threads = 2;
  rz::data::run_synth(oa);
  rz::data::run_synth(ob);
  rz::data::run_synth(oc);
  for (const char* f :
       {"train.csv", "train_annotations.csv", "sample_submission.csv", "test_labels.csv"}) {
    CAPTURE(f);
    CHECK(rz::test::read_file(a.path() / f) == rz::test::read_file(b.path() / f));
  }
  const rz::RanzcrTrainSet train = rz::read_ranzcr_train((a.path() / "train.csv").string());
  for (const auto& s : train.studies) {
    const fs::path rel = fs::path("train") / (s.uid + ".jpg");
    const std::string bytes = rz::test::read_file(a.path() / rel);
    CHECK(!bytes.empty());
    CHECK(bytes == rz::test::read_file(b.path() / rel));
  }
  CHECK(rz::test::read_file(a.path() / "train.csv") != rz::test::read_file(c.path() / "train.csv"));
}

TEST_CASE("synth: label prevalences are in sane bands and labels match the devices") {
  constexpr int kStudies = 300;
  std::array<int, rz::kNumRanzcrLabels> count{};
  std::set<int64_t> patients;
  for (int64_t i = 0; i < kStudies; ++i) {
    const SynthSample s = rz::data::render_synth_sample(3, i, 64);
    patients.insert(s.patient);
    std::array<float, rz::kNumRanzcrLabels> from_devices{};
    for (const auto& d : s.devices) {
      REQUIRE(d.label >= 0);
      REQUIRE(d.label < rz::kNumRanzcrLabels);
      from_devices[static_cast<size_t>(d.label)] = 1.f;
      CHECK(d.tip_visible == (d.label != 5));  // only "NGT - Incompletely Imaged" hides its tip
      CHECK(d.points.size() >= 5);
      for (const auto& p : d.points) {
        CHECK(p[0] >= -2.f);
        CHECK(p[1] >= -2.f);
        CHECK(p[0] <= 63.f);
        CHECK(p[1] <= 63.f);
      }
    }
    CHECK(from_devices == s.labels);
    for (int k = 0; k < rz::kNumRanzcrLabels; ++k)
      count[static_cast<size_t>(k)] += s.labels[static_cast<size_t>(k)] > 0.5f;
  }
  CHECK(patients.size() > 80);
  CHECK(patients.size() < 200);
  const int cvc_normal = count[9];
  for (int k = 0; k < rz::kNumRanzcrLabels; ++k) {
    CAPTURE(rz::kRanzcrLabels[static_cast<size_t>(k)]);
    CHECK(count[static_cast<size_t>(k)] >= 5);  // every label is present (~5% or more by design)
    if (k != 9) CHECK(count[static_cast<size_t>(k)] < cvc_normal);
  }
  CHECK(cvc_normal > kStudies * 45 / 100);
  CHECK(cvc_normal < kStudies * 85 / 100);
  CHECK(count[5] + count[6] + count[3] + count[4] <
        kStudies * 60 / 100);  // not every image has an NGT
}

// The point of the data set: tubes are brighter than their surroundings, so
// the label can be learned from the image, but only faintly.
struct TubeContrast {
  double vs_surround = 0;  // centreline minus the mean of the pixels 5 px to either side
  double vs_twin = 0;      // centreline minus the same pixels of the tube-free twin
};

TubeContrast tube_contrast(double difficulty, int studies) {
  SynthOptions o;
  o.seed = 5;
  o.size = 256;
  o.difficulty = difficulty;
  SynthOptions bare = o;
  bare.draw_devices = false;
  double on = 0, off = 0, twin = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < studies; ++i) {
    const SynthSample s = rz::data::render_synth_sample(o, SynthSplit::train, i);
    const SynthSample t = rz::data::render_synth_sample(bare, SynthSplit::train, i);
    REQUIRE(s.labels == t.labels);
    for (const auto& d : s.devices) {
      // The ETT lies in the dark tracheal air column, whose walls are 5 px away: skip it.
      if (label_kind(d.label) == 0) continue;
      for (size_t j = 1; j + 1 < d.points.size(); ++j) {
        const auto& p = d.points[j];
        const double tx = d.points[j + 1][0] - d.points[j - 1][0],
                     ty = d.points[j + 1][1] - d.points[j - 1][1];
        const double len = std::hypot(tx, ty);
        if (len < 1e-6) continue;
        const double nx = -ty / len, ny = tx / len;
        auto px = [](const rz::data::Image& img, double x, double y) -> int {
          const long xi = std::lround(x), yi = std::lround(y);
          if (xi < 0 || yi < 0 || xi >= img.width || yi >= img.height) return -1;
          return img.at(yi, xi);
        };
        const int c = px(s.image, p[0], p[1]), l = px(s.image, p[0] + 5 * nx, p[1] + 5 * ny),
                  r = px(s.image, p[0] - 5 * nx, p[1] - 5 * ny);
        if (c < 0 || l < 0 || r < 0) continue;
        on += c, off += 0.5 * (l + r), twin += px(t.image, p[0], p[1]), ++n;
      }
    }
  }
  REQUIRE(n > 100);
  const double dn = static_cast<double>(n);
  return {(on - off) / dn, (on - twin) / dn};
}

TEST_CASE("synth: tubes are faint but brighter than their surroundings") {
  const TubeContrast mid = tube_contrast(0.5, 20);
  MESSAGE("difficulty 0.5: centreline - 5 px away "
          << mid.vs_surround << " grey levels, centreline - tube-free twin " << mid.vs_twin);
  CHECK(mid.vs_surround > 4.0);   // visible on average...
  CHECK(mid.vs_surround < 30.0);  // ...but faint (ribs and ECG wires are brighter)
  CHECK(mid.vs_twin > 3.0);
  CHECK(mid.vs_twin < 20.0);
  const TubeContrast easy = tube_contrast(0.0, 6), hard = tube_contrast(1.0, 6);
  MESSAGE("centreline - tube-free twin: difficulty 0 " << easy.vs_twin << ", difficulty 1 "
                                                       << hard.vs_twin);
  CHECK(easy.vs_twin > 2 * hard.vs_twin);
  CHECK(hard.vs_twin > 1.0);
  CHECK(hard.vs_twin < 8.0);
}

// Dense regions are windowed, not clipped: a radiograph's processing maps the
// detector's range onto the display, so the mediastinum and heart stay below
// white and the CVC and NGT tips over them stay readable. With a hard clip at
// the top of the range, 28 of these 80 images had more than 1.5% of their
// pixels white, up to 16%.
TEST_CASE("synth: bright exposures are windowed, not clipped white") {
  for (const double contrast : {1.0, 4.0}) {
    SynthOptions o;
    o.seed = 11;
    o.size = 160;
    o.difficulty = 0;
    o.tube_contrast = contrast;
    o.tube_width_scale = 2;
    double worst = 0;
    for (int64_t i = 0; i < 40; ++i) {
      const SynthSample s = rz::data::render_synth_sample(o, SynthSplit::train, i);
      const auto& px = s.image.pixels;
      const auto white = std::count_if(px.begin(), px.end(), [](uint8_t v) { return v >= 253; });
      const double share = static_cast<double>(white) / static_cast<double>(px.size());
      CAPTURE(i);
      CHECK(share < 0.015);  // markers, electrodes and the noise on the brightest 0.5%
      worst = std::max(worst, share);
    }
    MESSAGE("tube contrast " << contrast << ": at most " << 100 * worst << "% of an image's pixels at 253-255");
  }
}

TEST_CASE("synth: bad options are errors") {
  SynthOptions o;
  o.size = 16;
  CHECK(rz::test::error_message([&] {
          rz::data::render_synth_sample(o, SynthSplit::train, 0);
        }).find("size must be 32..8192") != std::string::npos);
  o.size = 64;
  o.difficulty = 1.5;
  CHECK(rz::test::error_message([&] {
          rz::data::render_synth_sample(o, SynthSplit::train, 0);
        }).find("difficulty") != std::string::npos);
  o.difficulty = 0.5;
  CHECK(rz::test::error_message([&] { rz::data::run_synth(o); }).find("out_dir is empty") !=
        std::string::npos);
}
