// The synthetic RANZCR data set (`ranzcr synth`): chest-X-ray-like images with
// faint catheters and tubes, written in the exact layout of the competition
// (train.csv, train_annotations.csv, train/<uid>.jpg, test/<uid>.jpg,
// sample_submission.csv), so the whole pipeline can be run, tested and
// benchmarked without the 12 GB real set.
//
// What makes it a fair stand-in:
//   * the labels are decided by where each device's tip lies relative to the
//     drawn anatomy (carina, cavo-atrial junction, gastro-oesophageal junction,
//     stomach bubble, right atrium, pulmonary arteries), so they are learnable
//     from the pixels; the classes of one device are separated by small gaps
//     in tip position, not by any other cue;
//   * tubes are thin (about 1-2.5 px at 256 px, scaling with the size) and
//     faint (`difficulty`), crossed by ribs, ECG wires and lung vessels and
//     buried in noise, while train_annotations.csv gives their centrelines:
//     learning from the annotated image (the teacher) is clearly easier than
//     from the plain image (the student);
//   * exposure, contrast, gamma, a low-frequency illumination gradient, pose
//     and body habitus vary per image, so CLAHE and augmentation matter;
//   * several images per patient share anatomy and usually devices, so a
//     split that ignores PatientID leaks, as it does on the real set;
//   * rare labels are made less rare than in the real set (every label has at
//     least ~5% prevalence), so a small validation fold defines every AUC.
//
// Determinism: image i is rendered from generators seeded by (seed, split, i)
// and (seed, split, patient), never from shared state, so the output is the
// same bytes for a seed whatever the number of threads (on one machine and
// build: the maths library is not bit-identical across platforms).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/ranzcr_csv.h"
#include "engine/generator.h"

namespace rz::data {

struct SynthOptions {
  std::string out_dir;   // created if missing; must not hold a data set already (see overwrite)
  // A folder that already holds a data set (train.csv, train_annotations.csv,
  // sample_submission.csv, test_labels.csv, or images in train/ or test/) is
  // refused unless this is set; then our files in it are replaced (images of
  // an earlier, larger run are left in place). The CLI's `synth --force`.
  bool overwrite = false;
  int64_t n = 400;       // train images (train.csv rows)
  int64_t n_test = 100;  // test images (sample_submission.csv rows)
  int64_t size = 256;    // side of the square images in pixels, 32..8192
  uint64_t seed = 0;
  double images_per_patient = 2.5;  // mean images per patient (>= 1); 1..max(6, 2.4 * mean)
  // Tube faintness: 0 = tubes clearly visible, 1 = barely above the noise.
  // Scales the tube contrast (about 4x from 0 to 1: at 256 px a tube adds about
  // 17, 10 and 4 grey levels at its centreline at 0, 0.5 and 1) and, mildly, the noise.
  double difficulty = 0.5;
  // Multiplies every tube's drawn width (1 = the widths of a real 256 px
  // downscale). Low-resolution demos use wider tubes so a small model can
  // still see them without annotations.
  double tube_width_scale = 1.0;
  // Multiplies every tube's density contrast (1 = the `difficulty` mapping
  // alone). Real catheters are radio-opaque and often the brightest thing in
  // the image; a small CPU demo model needs them closer to that.
  double tube_contrast = 1.0;
  // Of the train images with at least one device, the fraction whose devices
  // are listed in train_annotations.csv (the real set annotates about 30% of
  // all images; more here so that a teacher has enough).
  double annotated_fraction = 0.8;
  int jpeg_quality = 92;
  // false renders the same studies without drawing the devices (labels and
  // annotations unchanged): a tube-free twin, to check that a model reads the
  // tubes and not some shortcut (it should score close to chance there).
  bool draw_devices = true;
  int threads = 0;  // OpenMP threads for rendering and encoding; 0 = OpenMP's default
};

enum class SynthSplit { train, test };

// One drawn device (tube, line or catheter).
struct SynthDevice {
  int label = -1;  // kRanzcrLabels index: its status ("CVC - Borderline"), or 10 for Swan-Ganz
  // Its centreline from where it enters the image to its tip, 5..30 points, in
  // pixels of the saved image ([x, y], pixel centres at integers), written with
  // one decimal. Like the real annotations, the first point of a few devices
  // lies up to 2 px outside the top or left border (negative coordinates).
  std::vector<std::array<float, 2>> points;
  bool tip_visible = true;  // false only for "NGT - Incompletely Imaged"
};

struct SynthSample {
  std::string uid;                               // "1.2.826.0.1.3680043.8.498.<38 digits>"
  std::string patient_id;                        // 9 hex digits, like the real "ec89415d1"
  int64_t patient = 0;                           // patient number within the split
  Image image;                                   // size x size, 1 channel
  std::array<float, kNumRanzcrLabels> labels{};  // 1 if any device has that status
  std::vector<SynthDevice> devices;              // every drawn device
  bool annotated = false;  // train: its devices are listed in train_annotations.csv
};

struct SynthReport {
  std::string out_dir;
  int64_t n_train = 0, n_test = 0;
  int64_t train_patients = 0, test_patients = 0;
  int64_t annotated_images = 0;      // train images listed in train_annotations.csv
  int64_t annotations = 0;           // rows of train_annotations.csv
  int64_t negative_coordinates = 0;  // annotation coordinates below 0 (the readers clip them)
  std::array<int64_t, kNumRanzcrLabels> train_label_counts{};  // positives per label in train.csv
  std::array<int64_t, kNumRanzcrLabels> test_label_counts{};   // the same for test_labels.csv
  double seconds = 0;                                          // wall time of run_synth
};

// Renders one study in memory, exactly as run_synth writes it (same seed,
// split, index and options -> same pixels, labels, UID; the JPEG adds its
// own loss). `options.out_dir` and `n`, `n_test` are not used.
SynthSample render_synth_sample(const SynthOptions& options, SynthSplit split, int64_t index);
// Shorthand: the train split with default options but seed and size.
SynthSample render_synth_sample(uint64_t seed, int64_t index, int64_t size);

// Writes the data set into options.out_dir:
//   train.csv              StudyInstanceUID, the 11 labels (0/1), PatientID
//   train_annotations.csv  StudyInstanceUID,label,data ("[[x, y], ...]"), one row per device
//                          of the annotated train images
//   train/<uid>.jpg        8-bit gray JPEG (stb stores 3 equal components)
//   test/<uid>.jpg         the test images
//   sample_submission.csv  StudyInstanceUID + the 11 labels, all 0, for the test images
//   test_labels.csv        not in the real set: the test labels, in train.csv's format,
//                          to score a submission
// then reads every CSV back with the RANZCR readers and checks that they
// return what was meant (a mismatch throws rz::Error). `progress(done, total)`
// is called on the calling thread after each batch of images (total = n + n_test).
SynthReport run_synth(const SynthOptions& options,
                      const std::function<void(int64_t done, int64_t total)>& progress = {});

// A few lines for the CLI: counts, label prevalences, time per image.
std::string format_synth_report(const SynthReport& report);

// ---- internals shared by synth.cpp and synth_anatomy.cpp ----
namespace synth_detail {

using Vec2 = std::array<double, 2>;

// Landmarks and shape parameters in "anatomy coordinates": a runs left to
// right in the image (a < 0 is the patient's right side), b runs top to bottom;
// the standard frame shows a in about [-0.5, 0.5] and b in [0, 1].
struct Anatomy {
  double mid = 0;                   // midline (spine) a
  double trachea_top = 0;           // trachea a at b = 0
  double carina[2]{};               // carina point
  double clavicle_b = 0.17;         // b of the sternal ends of the clavicles
  double apex_b[2]{};               // lung apex b, [0] image-left lung, [1] image-right lung
  double lung_w[2]{};               // lateral extent of each lung from the midline
  double dome_b[2]{};               // highest point of each diaphragm dome
  double cpa_b[2]{};                // costophrenic angles (lowest lateral lung point)
  double chest_w = 0.46;            // half width of the chest wall
  double neck_w = 0.1;              // half width of the neck
  double heart_c[2]{};              // heart ellipse centre
  double heart_r[2]{};              // heart ellipse radii
  double heart_rot = 0;             // radians
  double svc_a = 0;                 // superior vena cava a (image-left of the midline)
  double svc_top_b = 0;             // where the brachiocephalic veins join
  double caj_b = 0;                 // cavo-atrial junction b
  double pa[2]{};                   // main pulmonary artery point
  double gej[2]{};                  // gastro-oesophageal junction
  double stomach_c[2]{};            // gastric bubble centre
  double stomach_r[2]{};            // gastric bubble radii
  double oesophagus_a = 0;          // oesophagus a (a little image-right of the midline)
  double rib_b0 = 0, rib_step = 0;  // first posterior rib and rib spacing
  double body_habitus = 1;          // soft-tissue thickness factor
  bool arms_visible = false;
  bool breasts = false;

  // The tracheal air column's centre at height b (0 <= b <= carina b); the
  // ETT and the drawn trachea both follow it.
  double trachea_a(double b) const;
};

// Anatomy -> pixel mapping: x = S*(cx + sx*(cos*a - sin*(b-0.5))), y = S*(cy + sy*(sin*a +
// cos*(b-0.5))).
struct Pose {
  double cx = 0.5, cy = 0.5, sx = 1, sy = 1, angle = 0;
  Vec2 to_px(const Vec2& ab, double size) const;
  Vec2 to_anatomy(const Vec2& xy, double size) const;
};

// Per-image look: the density -> intensity mapping and the noise.
struct Look {
  double offset = 0.05, gain = 1.2, gamma = 1.0;
  double illum_x = 0, illum_y = 0, illum_r = 0;  // illumination gradient (intensity units 0..1)
  double noise_sigma = 3, noise_corr_sigma = 2;  // grey levels
  double tube_amp = 0.06;  // tube density contrast (before the per-device factor)
  bool marker = false;     // a side marker letter in a top corner
};

// Label indices in kRanzcrLabels.
enum : int {
  kEttAbnormal = 0,
  kEttBorderline,
  kEttNormal,
  kNgtAbnormal,
  kNgtBorderline,
  kNgtIncomplete,
  kNgtNormal,
  kCvcAbnormal,
  kCvcBorderline,
  kCvcNormal,
  kSwanGanz,
};

enum class DeviceKind { ett, ngt, cvc, swan };

// One device of one image: what it is, its status, and the random numbers
// that fix its route and tip (kept when the same device appears in another
// image of the patient).
struct DeviceSpec {
  DeviceKind kind = DeviceKind::ett;
  int label = -1;             // its status (a kRanzcrLabels index)
  int route = 0;              // kind-specific variant (entry site, kind of malposition)
  std::array<double, 6> u{};  // uniforms in [0, 1) fixing the tip and the path details
};

// Control points of the device's centreline in anatomy coordinates, from
// outside the image (entry) to the tip; the tip position encodes the status
// (see synth_anatomy.cpp for the bands).
std::vector<Vec2> device_path(const Anatomy& anatomy, const DeviceSpec& device);

// A device to draw, as a dense pixel polyline from its entry to its tip.
struct TubeStroke {
  std::vector<Vec2> px;
  double width_px = 1.5;     // full width at half maximum
  double amp = 0.06;         // density added at the centre
  bool double_wall = false;  // ETT: a wider faint band around the bright stripe
};

// Renders the anatomy (details drawn from `g`), the tubes, then maps density
// to 8-bit intensity with the look and noise. Returns a size x size gray image.
Image render_chest(const Anatomy& anatomy, const Pose& pose, const Look& look,
                   const std::vector<TubeStroke>& tubes, Generator& g, int64_t size);

// Catmull-Rom spline through `ctrl` (centripetal), sampled every ~`step` units.
std::vector<Vec2> catmull_rom(const std::vector<Vec2>& ctrl, double step);

}  // namespace synth_detail

}  // namespace rz::data
