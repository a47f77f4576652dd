// The synthetic RANZCR data set: patients, devices, labels, annotations and
// the files (see data/synth.h). The device routes and the pixels are in
// data/synth_anatomy.cpp (which also documents how tip positions map to labels).
//
// Prevalences (per image, before the framing correction): ETT 36% of images
// (Normal 58%, Borderline 22%, Abnormal 20% of them), NGT 42% (Normal 42%,
// Incompletely Imaged 24%, Borderline 16%, Abnormal 18%), CVC 0/1/2/3 lines
// 12/60/24/4% (each Normal 66%, Borderline 24%, Abnormal 10%), Swan-Ganz 6%.
#include "data/synth.h"

#include <omp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <unordered_set>

#include "data/csv.h"
#include "data/paths.h"
#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/parallel.h"

namespace rz::data {

using namespace synth_detail;

namespace {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Independent streams: one per (seed, purpose, split, item).
enum Stream : uint64_t {
  kPlanStream = 1,
  kPatientStream,
  kImageStream,
  kUidStream,
  kPatientIdStream
};

uint64_t derive_seed(uint64_t seed, Stream stream, SynthSplit split, int64_t item) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (static_cast<uint64_t>(stream) * 0xd1b54a32d192ed03ull));
  h = mix64(h ^ (split == SynthSplit::train ? 0x5851f42d4c957f2dull : 0x14057b7ef767814full));
  return mix64(h ^ (static_cast<uint64_t>(item) + 0x2545f4914f6cdd1dull));
}

void check_options(const SynthOptions& o) {
  RZ_CHECK(o.size >= 32 && o.size <= 8192, "synth: size must be 32..8192, got ", o.size);
  RZ_CHECK(o.n >= 0 && o.n_test >= 0, "synth: image counts must be >= 0, got n=", o.n,
           " n_test=", o.n_test);
  RZ_CHECK(o.images_per_patient >= 1 && o.images_per_patient <= 100,
           "synth: images_per_patient must be 1..100, got ", o.images_per_patient);
  RZ_CHECK(o.difficulty >= 0 && o.difficulty <= 1, "synth: difficulty must be 0..1, got ",
           o.difficulty);
  RZ_CHECK(o.tube_width_scale > 0 && o.tube_width_scale <= 8,
           "synth: tube_width_scale must be in (0, 8], got ", o.tube_width_scale);
  RZ_CHECK(o.tube_contrast > 0 && o.tube_contrast <= 8, "synth: tube_contrast must be in (0, 8], got ",
           o.tube_contrast);
  RZ_CHECK(o.annotated_fraction >= 0 && o.annotated_fraction <= 1,
           "synth: annotated_fraction must be 0..1, got ", o.annotated_fraction);
  RZ_CHECK(o.jpeg_quality >= 1 && o.jpeg_quality <= 100, "synth: jpeg_quality must be 1..100, got ",
           o.jpeg_quality);
  RZ_CHECK(o.threads >= 0, "synth: threads must be >= 0, got ", o.threads);
}

// ---- patients ----

struct Slot {
  int64_t patient = 0;  // patient number within the split
};

// Images 0..n-1 of a split grouped into patients: consecutive runs of 1..cap
// images, a truncated geometric number with the requested mean (before truncation).
std::vector<Slot> plan_patients(uint64_t seed, SynthSplit split, int64_t n, double mean) {
  Generator g(derive_seed(seed, kPlanStream, split, 0));
  const double more = 1.0 - 1.0 / mean;  // P(another image of the same patient)
  const int64_t cap = std::max<int64_t>(6, static_cast<int64_t>(std::llround(2.4 * mean)));
  std::vector<Slot> slots;
  slots.reserve(static_cast<size_t>(n));
  for (int64_t p = 0; static_cast<int64_t>(slots.size()) < n; ++p) {
    int64_t k = 1;
    while (k < cap && g.uniform() < more) ++k;
    for (int64_t j = 0; j < k && static_cast<int64_t>(slots.size()) < n; ++j)
      slots.push_back({p});
  }
  return slots;
}

// ---- devices ----

DeviceSpec make_spec(DeviceKind kind, Generator& g) {
  DeviceSpec d;
  d.kind = kind;
  for (auto& v : d.u) v = g.uniform();
  const double s = g.uniform();
  switch (kind) {
    case DeviceKind::ett:
      d.label = s < 0.58 ? kEttNormal : (s < 0.8 ? kEttBorderline : kEttAbnormal);
      // Abnormal: too high, right bronchus, oesophagus, at the carina.
      d.route = static_cast<int>(g.below(4));
      break;
    case DeviceKind::ngt:
      d.label = s < 0.42 ? kNgtNormal
                         : (s < 0.66 ? kNgtIncomplete : (s < 0.82 ? kNgtBorderline : kNgtAbnormal));
      d.route = g.uniform() < 0.5 ? 0 : 1;  // Abnormal: coiled, bronchus
      break;
    case DeviceKind::cvc: {
      d.label = s < 0.66 ? kCvcNormal : (s < 0.90 ? kCvcBorderline : kCvcAbnormal);
      // Entry: right IJ, left IJ, right subclavian, left subclavian, right arm, left arm.
      const double e = g.uniform();
      const double cum[] = {0.42, 0.54, 0.70, 0.82, 0.92, 1.0};
      d.route = 0;
      while (d.route < 5 && e >= cum[d.route]) ++d.route;
      break;
    }
    case DeviceKind::swan:
      d.label = kSwanGanz;
      d.route = g.uniform() < 0.7 ? 0 : 3;  // right IJ or left subclavian
      break;
  }
  return d;
}

// The device groups of one image, drawn independently of anything else.
struct DeviceSet {
  std::vector<DeviceSpec> ett, ngt, cvc, swan;  // swan: the catheter and its sheath (a CVC)
};

DeviceSet draw_devices(Generator& g) {
  DeviceSet s;
  if (g.uniform() < 0.36) s.ett.push_back(make_spec(DeviceKind::ett, g));
  if (g.uniform() < 0.42) s.ngt.push_back(make_spec(DeviceKind::ngt, g));
  const double c = g.uniform();
  const int n_cvc = c < 0.12 ? 0 : (c < 0.72 ? 1 : (c < 0.96 ? 2 : 3));
  for (int i = 0; i < n_cvc; ++i) s.cvc.push_back(make_spec(DeviceKind::cvc, g));
  if (g.uniform() < 0.06) {
    DeviceSpec sg = make_spec(DeviceKind::swan, g);
    s.swan.push_back(sg);
    if (g.uniform() < 0.85) {
      DeviceSpec sheath = make_spec(DeviceKind::cvc, g);
      sheath.route = sg.route;
      sheath.label = g.uniform() < 0.5 ? kCvcNormal : kCvcBorderline;
      sheath.u[1] = 0.2 * sheath.u[1];  // a short sheath when Borderline
      s.swan.push_back(sheath);
    }
  }
  return s;
}

// ---- patients and images ----

struct PatientSpec {
  Anatomy anatomy;
  double scale = 1, aspect = 1;
  DeviceSet devices;
};

PatientSpec draw_patient(Generator& g) {
  PatientSpec p;
  Anatomy& A = p.anatomy;
  A.mid = g.normal(0, 0.008);
  A.trachea_top = A.mid + g.normal(0, 0.006);
  A.carina[0] = A.mid + g.normal(-0.004, 0.005);
  A.carina[1] = g.uniform(0.36, 0.41);
  A.clavicle_b = A.carina[1] - g.uniform(0.19, 0.22);
  A.apex_b[0] = A.clavicle_b - g.uniform(0.05, 0.07);
  A.apex_b[1] = A.apex_b[0] + g.normal(0, 0.006);
  A.lung_w[0] = g.uniform(0.35, 0.4);
  A.lung_w[1] = A.lung_w[0] + g.normal(0, 0.01);
  A.dome_b[0] = g.uniform(0.66, 0.72);
  A.dome_b[1] = A.dome_b[0] + g.uniform(0.0, 0.035);
  A.cpa_b[0] = A.dome_b[0] + g.uniform(0.07, 0.11);
  A.cpa_b[1] = A.dome_b[1] + g.uniform(0.07, 0.11);
  A.chest_w = std::max(A.lung_w[0], A.lung_w[1]) + g.uniform(0.04, 0.06);
  A.neck_w = g.uniform(0.085, 0.11);
  A.caj_b = A.carina[1] + g.uniform(0.105, 0.125);
  A.svc_a = A.mid - g.uniform(0.045, 0.06);
  A.svc_top_b = A.carina[1] - g.uniform(0.08, 0.1);
  A.heart_c[0] = A.mid + g.uniform(0.05, 0.08);
  A.heart_c[1] = A.caj_b + g.uniform(0.1, 0.12);
  A.heart_r[0] = g.uniform(0.17, 0.21);
  A.heart_r[1] = std::clamp(A.dome_b[0] + 0.04 - A.heart_c[1], 0.1, 0.14);
  A.heart_rot = g.uniform(0.25, 0.5);
  A.pa[0] = A.mid + g.uniform(0.035, 0.05);
  A.pa[1] = A.carina[1] + g.uniform(0.05, 0.07);
  A.oesophagus_a = A.mid + g.uniform(0.012, 0.022);
  A.gej[0] = A.mid + g.uniform(0.04, 0.07);
  A.gej[1] = A.dome_b[1] + g.uniform(0.02, 0.04);
  A.stomach_c[0] = A.mid + g.uniform(0.15, 0.22);
  A.stomach_c[1] = A.dome_b[1] + g.uniform(0.06, 0.08);
  A.stomach_r[0] = g.uniform(0.05, 0.08);
  A.stomach_r[1] = g.uniform(0.03, 0.045);
  A.rib_b0 = A.apex_b[0] - g.uniform(0.01, 0.03);
  A.rib_step = g.uniform(0.052, 0.06);
  A.body_habitus = g.uniform(0.85, 1.15);
  A.arms_visible = g.uniform() < 0.5;
  A.breasts = g.uniform() < 0.35;
  p.scale = g.uniform(0.84, 1.08);
  p.aspect = g.uniform(0.94, 1.06);
  p.devices = draw_devices(g);
  return p;
}

bool in_image(const Vec2& p, double size) {
  return p[0] >= 0 && p[1] >= 0 && p[0] <= size - 1 && p[1] <= size - 1;
}

// Where segment p(in) -> q(out) crosses the image border.
Vec2 border_crossing(const Vec2& in, const Vec2& out, double size) {
  double t = 1;
  for (int c = 0; c < 2; ++c) {
    const double d = out[c] - in[c];
    if (out[c] < 0) t = std::min(t, (0 - in[c]) / d);
    if (out[c] > size - 1) t = std::min(t, (size - 1 - in[c]) / d);
  }
  return {std::clamp(in[0] + t * (out[0] - in[0]), 0.0, size - 1),
          std::clamp(in[1] + t * (out[1] - in[1]), 0.0, size - 1)};
}

// Annotation points: the visible run of the centreline that holds the tip (or
// the longest visible run), resampled by arc length to 5..30 points with a
// little hand jitter, rounded to 0.1 px. Occasionally the entry point is put
// up to 2 px outside the top or left border, as in the real annotations.
std::vector<std::array<float, 2>> annotate(const std::vector<Vec2>& px, double size, Generator& g) {
  std::vector<std::vector<Vec2>> runs;
  std::vector<Vec2> cur;
  for (size_t i = 0; i < px.size(); ++i) {
    const bool in = in_image(px[i], size);
    if (in) {
      if (cur.empty() && i > 0) cur.push_back(border_crossing(px[i], px[i - 1], size));
      cur.push_back(px[i]);
    } else if (!cur.empty()) {
      cur.push_back(border_crossing(px[i - 1], px[i], size));
      runs.push_back(std::move(cur));
      cur.clear();
    }
  }
  const bool tip_in = !cur.empty();
  if (!cur.empty()) runs.push_back(std::move(cur));
  if (runs.empty()) return {};
  auto length = [](const std::vector<Vec2>& r) {
    double l = 0;
    for (size_t i = 1; i < r.size(); ++i)
      l += std::hypot(r[i][0] - r[i - 1][0], r[i][1] - r[i - 1][1]);
    return l;
  };
  size_t pick = runs.size() - 1;
  if (!tip_in)
    for (size_t i = 0; i < runs.size(); ++i)
      if (length(runs[i]) > length(runs[pick])) pick = i;
  const std::vector<Vec2>& run = runs[pick];
  const double total = length(run);
  const int64_t m = std::clamp<int64_t>(std::llround(total / (0.06 * size)) + 1, 5, 30);
  std::vector<std::array<float, 2>> out;
  size_t seg = 0;
  double seg_start = 0;
  for (int64_t k = 0; k < m; ++k) {
    const double target = total * static_cast<double>(k) / static_cast<double>(m - 1);
    while (seg + 2 < run.size()) {
      const double l = std::hypot(run[seg + 1][0] - run[seg][0], run[seg + 1][1] - run[seg][1]);
      if (seg_start + l >= target) break;
      seg_start += l, ++seg;
    }
    const double l =
        std::max(1e-12, std::hypot(run[seg + 1][0] - run[seg][0], run[seg + 1][1] - run[seg][1]));
    const double t = std::clamp((target - seg_start) / l, 0.0, 1.0);
    double x = run[seg][0] + t * (run[seg + 1][0] - run[seg][0]);
    double y = run[seg][1] + t * (run[seg + 1][1] - run[seg][1]);
    const bool end = k == 0 || k == m - 1;
    if (!end) x += g.normal(0, 0.3), y += g.normal(0, 0.3);
    x = std::clamp(x, 0.0, size - 1), y = std::clamp(y, 0.0, size - 1);
    out.push_back(
        {static_cast<float>(std::round(x * 10) / 10), static_cast<float>(std::round(y * 10) / 10)});
  }
  if (g.uniform() < 0.08) {
    auto& first = out.front();
    const float neg = static_cast<float>(-std::round(g.uniform(0.5, 2.0) * 10) / 10);
    if (first[1] == 0.f)
      first[1] = neg;
    else if (first[0] == 0.f)
      first[0] = neg;
  }
  return out;
}

std::string make_uid(uint64_t seed, SynthSplit split, int64_t index) {
  Generator g(derive_seed(seed, kUidStream, split, index));
  std::string uid = "1.2.826.0.1.3680043.8.498.";
  uid += static_cast<char>('1' + g.below(9));
  for (int i = 0; i < 37; ++i) uid += static_cast<char>('0' + g.below(10));
  return uid;
}

std::string make_patient_id(uint64_t seed, SynthSplit split, int64_t patient) {
  Generator g(derive_seed(seed, kPatientIdStream, split, patient));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 9; ++i) id += kHex[g.below(16)];
  return id;
}

// One image of one patient.
SynthSample render_slot(const SynthOptions& o, SynthSplit split, int64_t index, const Slot& slot) {
  Generator pg(derive_seed(o.seed, kPatientStream, split, slot.patient));
  const PatientSpec patient = draw_patient(pg);
  Generator g(derive_seed(o.seed, kImageStream, split, index));

  // Same patient, another day: breathing, pose and framing change.
  Anatomy A = patient.anatomy;
  const double breath = g.normal(0, 0.012);
  for (int s = 0; s < 2; ++s) A.dome_b[s] += breath, A.cpa_b[s] += breath;
  A.gej[1] += breath, A.stomach_c[1] += breath, A.heart_c[1] += 0.5 * breath;
  Pose pose;
  const double sc = patient.scale * g.uniform(0.97, 1.03);
  pose.sx = sc * patient.aspect, pose.sy = sc / patient.aspect;
  pose.angle = std::clamp(g.normal(0, 0.035), -0.08, 0.08);
  pose.cx = 0.5 + std::clamp(g.normal(0, 0.02), -0.05, 0.05);
  pose.cy = 0.5 + std::clamp(g.normal(0, 0.02), -0.05, 0.05);

  Look look;
  look.offset = g.uniform(-0.04, 0.12);
  look.gain = g.uniform(0.85, 1.3);
  look.gamma = std::clamp(std::exp(g.normal(0, 0.25)), 0.6, 1.7);
  look.illum_x = g.uniform(-0.2, 0.2);
  look.illum_y = g.uniform(-0.15, 0.15);
  look.illum_r = g.uniform(-0.2, 0.05);
  look.noise_sigma = g.uniform(1.5, 4.5) * (0.7 + 0.6 * o.difficulty);
  look.noise_corr_sigma = g.uniform(0.5, 3.0);
  look.tube_amp = (0.07 + (0.016 - 0.07) * o.difficulty) * g.uniform(0.75, 1.25) * o.tube_contrast;
  look.marker = g.uniform() < 0.5;

  // Devices: each group is the patient's (still in place, maybe moved) or drawn afresh.
  const DeviceSet fresh = draw_devices(g);
  std::vector<DeviceSpec> specs;
  auto take = [&](const std::vector<DeviceSpec>& mine, const std::vector<DeviceSpec>& other) {
    const bool keep = g.uniform() < 0.7;
    for (DeviceSpec d : keep ? mine : other) {
      if (keep && d.kind != DeviceKind::swan && g.uniform() < 0.2) {
        const DeviceSpec moved = make_spec(d.kind, g);  // repositioned: a new status and tip
        d.label = moved.label, d.u[0] = moved.u[0], d.u[1] = moved.u[1];
        if (d.kind == DeviceKind::ett || d.kind == DeviceKind::ngt) d.route = moved.route;
      }
      specs.push_back(d);
    }
  };
  take(patient.devices.ett, fresh.ett);
  take(patient.devices.ngt, fresh.ngt);
  take(patient.devices.cvc, fresh.cvc);
  take(patient.devices.swan, fresh.swan);

  const double size = static_cast<double>(o.size);
  const double px_scale = size / 256.0 * o.tube_width_scale;
  SynthSample out;
  std::vector<TubeStroke> tubes;
  for (const DeviceSpec& d : specs) {
    TubeStroke t;
    t.px = catmull_rom(device_path(A, d), 1.5 / size);
    for (auto& p : t.px) p = pose.to_px(p, size);
    const double amp = look.tube_amp * g.uniform(0.8, 1.2);
    switch (d.kind) {
      case DeviceKind::ett:
        t.width_px = 1.8 * px_scale, t.amp = 0.9 * amp, t.double_wall = true;
        break;
      case DeviceKind::ngt:
        t.width_px = 1.6 * px_scale, t.amp = amp;
        break;
      case DeviceKind::cvc:
        t.width_px = 1.35 * px_scale, t.amp = 0.9 * amp;
        break;
      case DeviceKind::swan:
        t.width_px = 1.5 * px_scale, t.amp = amp;
        break;
    }
    SynthDevice dev;
    dev.label = d.label;
    const bool tip_in = in_image(t.px.back(), size) && t.px.back()[1] < size - 3;
    if (d.kind == DeviceKind::ngt && (d.label == kNgtIncomplete || !tip_in)) {
      dev.label = kNgtIncomplete;  // the framing hides the tip: incompletely imaged
      dev.tip_visible = false;
    }
    dev.points = annotate(t.px, size, g);
    if (dev.points.empty()) continue;  // entirely outside the image: not drawn
    out.labels[static_cast<size_t>(dev.label)] = 1.f;
    out.devices.push_back(std::move(dev));
    tubes.push_back(std::move(t));
  }
  // Endotracheal tubes listed last: the trachea and the oesophagus project within a
  // few pixels of each other, and a teacher draws the annotation rows in file order,
  // so a long NGT drawn after a short ETT would cover it.
  std::stable_partition(out.devices.begin(), out.devices.end(),
                        [](const SynthDevice& d) { return d.label > kEttNormal; });
  out.annotated =
      split == SynthSplit::train && !out.devices.empty() && g.uniform() < o.annotated_fraction;
  out.image =
      render_chest(A, pose, look, o.draw_devices ? tubes : std::vector<TubeStroke>{}, g, o.size);
  out.uid = make_uid(o.seed, split, index);
  out.patient_id = make_patient_id(o.seed, split, slot.patient);
  out.patient = slot.patient;
  return out;
}

std::string format_coord(float v) {
  char buf[32];
  const auto r =
      std::to_chars(buf, buf + sizeof(buf), static_cast<double>(v), std::chars_format::fixed, 1);
  std::string s(buf, r.ptr);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

std::string format_points(const std::vector<std::array<float, 2>>& pts) {
  std::string s = "[";
  for (size_t i = 0; i < pts.size(); ++i) {
    if (i) s += ", ";
    s += "[" + format_coord(pts[i][0]) + ", " + format_coord(pts[i][1]) + "]";
  }
  return s + "]";
}

// What the CSVs must say about one study.
struct StudyRecord {
  std::string uid, patient_id;
  std::array<float, kNumRanzcrLabels> labels{};
  std::vector<SynthDevice> devices;
  bool annotated = false;
};

std::string labels_csv(const std::vector<StudyRecord>& studies, bool with_patient) {
  std::ostringstream os;
  std::vector<std::string> row{"StudyInstanceUID"};
  for (auto l : kRanzcrLabels) row.emplace_back(l);
  if (with_patient) row.emplace_back("PatientID");
  write_csv_row(os, row);
  for (const StudyRecord& s : studies) {
    row.assign(1, s.uid);
    for (float v : s.labels) row.emplace_back(v > 0.5f ? "1" : "0");
    if (with_patient) row.push_back(s.patient_id);
    write_csv_row(os, row);
  }
  return os.str();
}

// What of a RANZCR data set `dir` already holds ("train.csv, 12 images in
// train/"), or "" when nothing: the files run_synth would replace.
std::string existing_data_set(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::string found;
  auto add = [&](const std::string& what) { found += (found.empty() ? "" : ", ") + what; };
  std::error_code ec;
  for (const char* f : {"train.csv", "train_annotations.csv", "sample_submission.csv",
                        "test_labels.csv"})
    if (fs::exists(fs::symlink_status(dir / f, ec))) add(f);
  for (const char* sub : {"train", "test"}) {
    int64_t images = 0;
    for (fs::directory_iterator it(dir / sub, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string ext = it->path().extension().string();
      images += ext == ".jpg" || ext == ".jpeg" || ext == ".png";
    }
    if (images > 0) add(std::to_string(images) + " images in " + sub + "/");
  }
  return found;
}

void validate_written(const std::string& dir, const std::vector<StudyRecord>& train,
                      const std::vector<StudyRecord>& test, int64_t annotations) {
  namespace fs = std::filesystem;
  const RanzcrTrainSet set = read_ranzcr_train((fs::path(dir) / "train.csv").string());
  RZ_CHECK(set.studies.size() == train.size(), "synth: train.csv has ", set.studies.size(),
           " rows, wrote ", train.size());
  for (size_t i = 0; i < train.size(); ++i) {
    const RanzcrStudy& s = set.studies[i];
    RZ_CHECK(
        s.uid == train[i].uid && s.patient_id == train[i].patient_id && s.labels == train[i].labels,
        "synth: train.csv row ", i + 2, " reads back differently (", s.uid, ")");
  }
  const RanzcrAnnotations ann =
      read_ranzcr_annotations((fs::path(dir) / "train_annotations.csv").string(), set);
  RZ_CHECK(ann.count == annotations, "synth: train_annotations.csv has ", ann.count,
           " rows, wrote ", annotations);
  for (size_t i = 0; i < train.size(); ++i) {
    const auto& got = ann.by_study[i];
    const size_t want = train[i].annotated ? train[i].devices.size() : 0;
    RZ_CHECK(got.size() == want, "synth: study ", train[i].uid, " has ", got.size(),
             " annotations, wrote ", want);
    for (size_t k = 0; k < got.size(); ++k) {
      const SynthDevice& d = train[i].devices[k];
      RZ_CHECK(got[k].label == d.label && got[k].points.size() == d.points.size(),
               "synth: annotation of ", train[i].uid, " reads back differently");
      for (size_t j = 0; j < d.points.size(); ++j)
        for (int c = 0; c < 2; ++c)
          RZ_CHECK(std::abs(got[k].points[j][c] - std::max(0.f, d.points[j][c])) < 1e-3f,
                   "synth: annotation point of ", train[i].uid, " reads back as ",
                   got[k].points[j][c]);
    }
  }
  const std::vector<std::string> sub =
      read_ranzcr_sample_submission((fs::path(dir) / "sample_submission.csv").string());
  RZ_CHECK(sub.size() == test.size(), "synth: sample_submission.csv has ", sub.size(),
           " rows, wrote ", test.size());
  for (size_t i = 0; i < test.size(); ++i)
    RZ_CHECK(sub[i] == test[i].uid, "synth: sample_submission.csv row ", i + 2, " is ", sub[i]);
  const RanzcrTrainSet tl = read_ranzcr_train((fs::path(dir) / "test_labels.csv").string());
  RZ_CHECK(tl.studies.size() == test.size(), "synth: test_labels.csv has ", tl.studies.size(),
           " rows");
  for (const auto& [name, split] : {std::pair{"train", &train}, std::pair{"test", &test}}) {
    for (const StudyRecord& s : *split) {
      const fs::path p = path_in_folder((fs::path(dir) / name).string(), s.uid, ".jpg", "image");
      std::error_code ec;
      const auto bytes = fs::file_size(p, ec);
      RZ_CHECK(!ec && bytes > 0, "synth: image not written: ", p.string());
    }
  }
}

}  // namespace

SynthSample render_synth_sample(const SynthOptions& options, SynthSplit split, int64_t index) {
  check_options(options);
  RZ_CHECK(index >= 0, "render_synth_sample: index must be >= 0, got ", index);
  const std::vector<Slot> plan =
      plan_patients(options.seed, split, index + 1, options.images_per_patient);
  return render_slot(options, split, index, plan.back());
}

SynthSample render_synth_sample(uint64_t seed, int64_t index, int64_t size) {
  SynthOptions o;
  o.seed = seed;
  o.size = size;
  return render_synth_sample(o, SynthSplit::train, index);
}

SynthReport run_synth(const SynthOptions& o,
                      const std::function<void(int64_t, int64_t)>& progress) {
  namespace fs = std::filesystem;
  check_options(o);
  RZ_CHECK(!o.out_dir.empty(), "synth: out_dir is empty");
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path dir(o.out_dir);
  if (!o.overwrite) {
    const std::string found = existing_data_set(dir);
    if (!found.empty())
      RZ_THROW("synth: '", o.out_dir, "' already holds a data set (", found,
               "); writing would replace it. Pick another folder, or overwrite it on purpose "
               "(ranzcr synth --force)");
  }
  for (const fs::path& p : {dir, dir / "train", dir / "test"}) {
    std::error_code ec;
    fs::create_directories(p, ec);
    RZ_CHECK(!ec && fs::is_directory(p), "synth: cannot create directory '", p.string(),
             "': ", ec.message());
    // The folder is ours now (new, or overwritten on purpose): clear what a
    // killed run's AtomicFile writes left behind.
    remove_stale_temporaries(p.string());
  }

  const int64_t total = o.n + o.n_test;
  std::vector<StudyRecord> train(static_cast<size_t>(o.n)), test(static_cast<size_t>(o.n_test));
  const std::vector<Slot> train_plan =
      plan_patients(o.seed, SynthSplit::train, o.n, o.images_per_patient);
  const std::vector<Slot> test_plan =
      plan_patients(o.seed, SynthSplit::test, o.n_test, o.images_per_patient);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const int64_t batch = std::max<int64_t>(16, 4 * threads);
  int64_t done = 0;
  for (int64_t start = 0; start < total; start += batch) {
    const int64_t end = std::min(total, start + batch);
    FirstError errors;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = start; i < end; ++i) {
      errors.run(i, [&] {
        const bool is_train = i < o.n;
        const SynthSplit split = is_train ? SynthSplit::train : SynthSplit::test;
        const int64_t index = is_train ? i : i - o.n;
        const Slot& slot = is_train ? train_plan[static_cast<size_t>(index)]
                                    : test_plan[static_cast<size_t>(index)];
        SynthSample s = render_slot(o, split, index, slot);
        write_jpeg(path_in_folder((dir / (is_train ? "train" : "test")).string(), s.uid, ".jpg",
                                  "image"),
                   s.image, o.jpeg_quality);
        StudyRecord& r = (is_train ? train : test)[static_cast<size_t>(index)];
        r.uid = std::move(s.uid), r.patient_id = std::move(s.patient_id);
        r.labels = s.labels, r.devices = std::move(s.devices), r.annotated = s.annotated;
      });
    }
    errors.rethrow();  // the first failure, in image order
    done = end;
    if (progress) progress(done, total);
  }

  std::unordered_set<std::string> uids;
  for (const auto* split : {&train, &test})
    for (const StudyRecord& r : *split)
      RZ_CHECK(uids.insert(r.uid).second, "synth: duplicate UID ", r.uid);

  SynthReport rep;
  rep.out_dir = o.out_dir;
  rep.n_train = o.n, rep.n_test = o.n_test;
  rep.train_patients = train_plan.empty() ? 0 : train_plan.back().patient + 1;
  rep.test_patients = test_plan.empty() ? 0 : test_plan.back().patient + 1;
  std::ostringstream ann;
  write_csv_row(ann, {"StudyInstanceUID", "label", "data"});
  for (const StudyRecord& r : train) {
    for (int k = 0; k < kNumRanzcrLabels; ++k)
      rep.train_label_counts[static_cast<size_t>(k)] += r.labels[static_cast<size_t>(k)] > 0.5f;
    if (!r.annotated) continue;
    ++rep.annotated_images;
    for (const SynthDevice& d : r.devices) {
      write_csv_row(ann, {r.uid, std::string(kRanzcrLabels[static_cast<size_t>(d.label)]),
                          format_points(d.points)});
      ++rep.annotations;
      for (const auto& p : d.points) rep.negative_coordinates += (p[0] < 0) + (p[1] < 0);
    }
  }
  for (const StudyRecord& r : test)
    for (int k = 0; k < kNumRanzcrLabels; ++k)
      rep.test_label_counts[static_cast<size_t>(k)] += r.labels[static_cast<size_t>(k)] > 0.5f;
  std::vector<StudyRecord> blank = test;
  for (StudyRecord& r : blank) r.labels.fill(0.f);
  write_text_file_atomic((dir / "train.csv").string(), labels_csv(train, true));
  write_text_file_atomic((dir / "train_annotations.csv").string(), ann.str());
  write_text_file_atomic((dir / "sample_submission.csv").string(), labels_csv(blank, false));
  write_text_file_atomic((dir / "test_labels.csv").string(), labels_csv(test, true));
  validate_written(o.out_dir, train, test, rep.annotations);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

std::string format_synth_report(const SynthReport& r) {
  std::ostringstream os;
  os << "synth: wrote " << r.n_train << " train images (" << r.train_patients << " patients), "
     << r.n_test << " test images (" << r.test_patients << " patients) to " << r.out_dir << "\n";
  os << "synth: " << r.annotations << " annotations on " << r.annotated_images << " images ("
     << r.negative_coordinates << " negative coordinates)\n";
  os << "synth: train prevalence:";
  for (int k = 0; k < kNumRanzcrLabels; ++k) {
    const double p =
        r.n_train ? 100.0 * static_cast<double>(r.train_label_counts[static_cast<size_t>(k)]) /
                        static_cast<double>(r.n_train)
                  : 0.0;
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%.1f%%", p);
    os << (k ? ", " : " ") << kRanzcrLabels[static_cast<size_t>(k)] << " " << buf;
  }
  const int64_t n = r.n_train + r.n_test;
  char buf[96];
  std::snprintf(buf, sizeof(buf), "\nsynth: %.2f s, %.2f ms per image (all threads)\n", r.seconds,
                n ? 1000.0 * r.seconds / static_cast<double>(n) : 0.0);
  os << buf;
  return os.str();
}

}  // namespace rz::data
