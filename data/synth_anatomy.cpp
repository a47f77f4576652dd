// The image side of the synthetic data set (see data/synth.h): the device
// routes through the anatomy (whose tips decide the labels) and the rendering
// of the chest radiographs.
//
// The image is built as a density map (0 = air, ~0.5 = soft tissue, more for
// bone), which is what an X-ray shows after the log transform: overlapping
// structures add. Smooth regions (body, lungs, heart, mediastinum, spine,
// stomach bubble) are evaluated per pixel from analytic shapes with soft
// edges; thin structures (trachea, ribs, clavicles, vessels, ECG wires,
// devices) are splines rasterized through the distance to their polyline.
// The density is then mapped to 8-bit intensity with a per-image exposure,
// gamma and illumination gradient, plus white and low-frequency noise.
//
// Cost at 256 x 256: one per-pixel pass with a handful of smoothsteps, about
// 60 strokes each touching only its bounding box, and the mapping through a
// lookup table: a few milliseconds per image.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "data/synth.h"
#include "engine/error.h"

namespace rz::data::synth_detail {

double Anatomy::trachea_a(double b) const {
  const double t = std::clamp(b / carina[1], 0.0, 1.0);
  // A slight bow to the image left, where the aortic knob pushes the trachea.
  return trachea_top + (carina[0] - trachea_top) * t - 0.008 * std::sin(std::numbers::pi * t);
}

Vec2 Pose::to_px(const Vec2& ab, double size) const {
  const double c = std::cos(angle), s = std::sin(angle);
  const double a = ab[0], b = ab[1] - 0.5;
  return {size * (cx + sx * (c * a - s * b)), size * (cy + sy * (s * a + c * b))};
}

Vec2 Pose::to_anatomy(const Vec2& xy, double size) const {
  const double c = std::cos(angle), s = std::sin(angle);
  const double u = (xy[0] / size - cx) / sx, v = (xy[1] / size - cy) / sy;
  // Inverse rotation.
  return {c * u + s * v, -s * u + c * v + 0.5};
}

std::vector<Vec2> catmull_rom(const std::vector<Vec2>& ctrl, double step) {
  RZ_CHECK(step > 0, "catmull_rom: step must be positive, got ", step);
  std::vector<Vec2> out;
  if (ctrl.empty()) return out;
  if (ctrl.size() == 1) return ctrl;
  const size_t n = ctrl.size();
  auto point = [&](int64_t i) -> Vec2 {
    // Reflected end points: the curve starts and ends heading straight at the neighbour.
    if (i < 0) return {2 * ctrl[0][0] - ctrl[1][0], 2 * ctrl[0][1] - ctrl[1][1]};
    if (i >= static_cast<int64_t>(n))
      return {2 * ctrl[n - 1][0] - ctrl[n - 2][0], 2 * ctrl[n - 1][1] - ctrl[n - 2][1]};
    return ctrl[static_cast<size_t>(i)];
  };
  auto knot = [](const Vec2& p, const Vec2& q) {
    // Centripetal parameterization (alpha = 1/2): no cusps or self-loops within a segment.
    return std::max(std::sqrt(std::hypot(q[0] - p[0], q[1] - p[1])), 1e-6);
  };
  out.push_back(ctrl[0]);
  for (size_t i = 0; i + 1 < n; ++i) {
    const int64_t k = static_cast<int64_t>(i);
    const Vec2 p0 = point(k - 1), p1 = point(k), p2 = point(k + 1), p3 = point(k + 2);
    const double t0 = 0, t1 = t0 + knot(p0, p1), t2 = t1 + knot(p1, p2), t3 = t2 + knot(p2, p3);
    const double len = std::hypot(p2[0] - p1[0], p2[1] - p1[1]);
    const int64_t steps = std::max<int64_t>(2, static_cast<int64_t>(std::ceil(len / step)));
    for (int64_t j = 1; j <= steps; ++j) {
      const double t = t1 + (t2 - t1) * static_cast<double>(j) / static_cast<double>(steps);
      Vec2 r;
      for (int c = 0; c < 2; ++c) {
        // Barry-Goldman pyramid.
        const double a1 = (t1 - t) / (t1 - t0) * p0[c] + (t - t0) / (t1 - t0) * p1[c];
        const double a2 = (t2 - t) / (t2 - t1) * p1[c] + (t - t1) / (t2 - t1) * p2[c];
        const double a3 = (t3 - t) / (t3 - t2) * p2[c] + (t - t2) / (t3 - t2) * p3[c];
        const double b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2;
        const double b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3;
        r[c] = (t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2;
      }
      out.push_back(r);
    }
  }
  return out;
}

namespace {

// ---- device routes (anatomy coordinates, entry first, tip last) ----
//
// Label design. Each device has one status, decided by where its tip is put
// relative to the patient's landmarks; the bands of different statuses are
// separated by gaps, so the label is a function of the image:
//   ETT   tip height above the carina (anatomy units, ~0.025 per cm):
//         Normal 0.085..0.16; Borderline 0.045..0.067 or 0.178..0.205;
//         Abnormal: above 0.24 (too high), -0.005..0.015 (at the carina), in the
//         right main bronchus, or down the oesophagus (off the air column).
//   NGT   Normal: tip in the stomach at least 0.08 below the gastro-oesophageal
//         junction (GEJ); Borderline: tip within -0.04..+0.015 of the GEJ;
//         Abnormal: coiled in the chest or down a main bronchus into a lung;
//         Incompletely Imaged: through the GEJ and out of the image bottom
//         (also any "Normal" tube whose tip the framing cuts off).
//   CVC   Normal: tip in the lower SVC, cavo-atrial junction (CAJ) - 0.09..+0.015;
//         Borderline: short (brachiocephalic vein / SVC origin) or just past the
//         CAJ (+0.035..+0.055); Abnormal: deep in the right atrium (+0.08..+0.14)
//         or misdirected (from a jugular into a subclavian vein, or from the arm up
//         a jugular vein).
//   Swan-Ganz  through the right atrium and ventricle into a pulmonary artery,
//         usually with its introducer sheath (a short CVC).

// Control points of the venous route from the entry site to the top of the
// SVC (the last point), for CVC routes 0..5.
std::vector<Vec2> venous_route(const Anatomy& A, int route, const DeviceSpec& d) {
  const double m = A.mid, cb = A.clavicle_b, w = 0.01 * (d.u[5] - 0.5);
  const Vec2 svc_top{A.svc_a, A.svc_top_b};
  switch (route) {
    case 0:  // right internal jugular
      return {{m - 0.1 + w, -0.4}, {m - 0.088 + w, 0.03}, {m - 0.075, cb}, svc_top};
    case 1:  // left internal jugular, then the left brachiocephalic vein across
      return {{m + 0.1 + w, -0.4},   {m + 0.088 + w, 0.03},          {m + 0.08, cb},
              {m + 0.05, cb + 0.05}, {m - 0.01, A.svc_top_b - 0.02}, svc_top};
    case 2:  // right subclavian
      return {{m - 0.75, cb - 0.06},
              {m - 0.36, cb + 0.02 + w},
              {m - 0.2, cb + 0.035},
              {m - 0.1, cb + 0.05},
              svc_top};
    case 3:  // left subclavian
      return {{m + 0.75, cb - 0.06},  {m + 0.36, cb + 0.02 + w},       {m + 0.2, cb + 0.04},
              {m + 0.09, cb + 0.055}, {m + 0.02, A.svc_top_b - 0.015}, svc_top};
    case 4:  // right arm (PICC)
      return {{m - 0.8, cb + 0.2},
              {m - 0.5, cb + 0.08 + w},
              {m - 0.3, cb + 0.04},
              {m - 0.1, cb + 0.05},
              svc_top};
    default:  // left arm (PICC)
      return {{m + 0.8, cb + 0.2},    {m + 0.5, cb + 0.08 + w},        {m + 0.3, cb + 0.045},
              {m + 0.09, cb + 0.055}, {m + 0.02, A.svc_top_b - 0.015}, svc_top};
  }
}

std::vector<Vec2> cvc_path(const Anatomy& A, const DeviceSpec& d) {
  std::vector<Vec2> p = venous_route(A, d.route, d);
  const double m = A.mid, cb = A.clavicle_b;
  const double wob = 0.006 * (d.u[2] - 0.5);
  auto down_svc = [&](double tip_b, double tip_a) {
    if (tip_b > A.svc_top_b + 0.06) p.push_back({A.svc_a + wob, 0.5 * (A.svc_top_b + tip_b)});
    p.push_back({tip_a, tip_b});
  };
  if (d.label == kCvcNormal) {
    down_svc(A.caj_b - 0.09 + 0.105 * d.u[0], A.svc_a + 0.004 * (d.u[3] - 0.5));
  } else if (d.label == kCvcBorderline) {
    if (d.u[1] < 0.65) {
      // Short: the tip stops before the SVC (brachiocephalic vein / SVC origin).
      const Vec2 a = p[p.size() - 2], b = p.back();
      const double t = 0.25 + 0.6 * d.u[0];
      p.back() = {a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t};
    } else {
      down_svc(A.caj_b + 0.035 + 0.02 * d.u[0], A.svc_a + 0.004);
    }
  } else if (d.u[1] < 0.5) {
    // Deep in the right atrium, curving toward the heart.
    down_svc(A.caj_b + 0.08 + 0.06 * d.u[0], A.svc_a + 0.02 + 0.03 * d.u[3]);
  } else if (d.route <= 1) {
    // From a jugular vein into the ipsilateral subclavian vein.
    const double s = d.route == 0 ? -1 : 1;
    p.resize(3);
    p.push_back({m + s * 0.13, cb + 0.05});
    p.push_back({m + s * (0.25 + 0.1 * d.u[0]), cb + 0.03});
  } else {
    // From the arm up the ipsilateral internal jugular vein.
    const double s = (d.route == 2 || d.route == 4) ? -1 : 1;
    p.resize(p.size() - (s < 0 ? 1 : 2));
    p.push_back({m + s * 0.08, cb - 0.02});
    p.push_back({m + s * 0.085, cb - 0.1 - 0.06 * d.u[0]});
  }
  return p;
}

std::vector<Vec2> swan_path(const Anatomy& A, const DeviceSpec& d) {
  std::vector<Vec2> p = venous_route(A, d.route, d);
  const double hx = A.heart_c[0], hy = A.heart_c[1];
  p.push_back({A.svc_a, 0.5 * (A.svc_top_b + A.caj_b)});
  p.push_back({A.svc_a - 0.01, A.caj_b + 0.05});  // right atrium
  p.push_back({hx - 0.03, hy + 0.055});           // right ventricle
  p.push_back({hx + 0.05, hy + 0.04});
  p.push_back({hx + 0.065, hy - 0.035});  // outflow tract
  p.push_back({A.pa[0], A.pa[1]});        // main pulmonary artery
  if (d.u[0] < 0.6) {
    p.push_back({A.pa[0] + 0.06, A.pa[1] + 0.005});
    p.push_back({A.pa[0] + 0.1 + 0.04 * d.u[1], A.pa[1] + 0.03 + 0.02 * d.u[2]});
  } else {
    p.push_back({A.pa[0] - 0.07, A.pa[1] + 0.0});
    p.push_back({A.pa[0] - 0.13 - 0.04 * d.u[1], A.pa[1] + 0.035 + 0.02 * d.u[2]});
  }
  return p;
}

std::vector<Vec2> ett_path(const Anatomy& A, const DeviceSpec& d) {
  const double car = A.carina[1];
  const double off = 0.006 * (d.u[3] - 0.5);  // resting against a tracheal wall
  std::vector<Vec2> p{{A.trachea_top + 0.04 * (d.u[2] - 0.5), -0.4}};
  auto along_trachea = [&](double tip_b) {
    for (double t : {0.0, 0.4, 0.75}) p.push_back({A.trachea_a(t * tip_b) + off, t * tip_b});
    p.push_back({A.trachea_a(tip_b) + off, tip_b});
  };
  if (d.label == kEttNormal) {
    along_trachea(car - (0.085 + 0.075 * d.u[0]));
  } else if (d.label == kEttBorderline) {
    along_trachea(car - (d.u[1] < 0.5 ? 0.045 + 0.022 * d.u[0] : 0.178 + 0.027 * d.u[0]));
  } else if (d.route == 0) {
    along_trachea(car - (0.24 + 0.06 * d.u[0]));  // far too high
  } else if (d.route == 1) {
    // Into the right main bronchus.
    along_trachea(car - 0.04);
    p.push_back({A.carina[0] - 0.008, car + 0.005});
    p.push_back({A.carina[0] - 0.035 - 0.02 * d.u[0], car + 0.04 + 0.025 * d.u[0]});
  } else if (d.route == 2) {
    // Oesophageal intubation: beside the air column, past the carina.
    p.clear();
    const double oa = A.oesophagus_a + 0.005;
    p = {{oa + 0.03 * (d.u[2] - 0.5), -0.4},
         {oa, 0.0},
         {oa + 0.003, 0.2},
         {oa + 0.006, car + 0.04 + 0.1 * d.u[0]}};
  } else {
    along_trachea(car - (-0.005 + 0.02 * d.u[0]));  // at the carina
  }
  return p;
}

std::vector<Vec2> ngt_path(const Anatomy& A, const DeviceSpec& d) {
  const double oa = A.oesophagus_a, car = A.carina[1];
  const Vec2 gej{A.gej[0], A.gej[1]};
  std::vector<Vec2> p{{A.mid + 0.04 * (d.u[2] - 0.5), -0.4}, {oa - 0.004, 0.0}, {oa, 0.15}};
  auto oesophagus = [&] {
    p.push_back({oa + 0.003, car + 0.06});
    p.push_back({0.5 * (oa + gej[0]), 0.5 * (car + gej[1]) + 0.04});
  };
  if (d.label == kNgtNormal) {
    oesophagus();
    p.push_back(gej);
    p.push_back({gej[0] + 0.04, gej[1] + 0.045});
    p.push_back({gej[0] + 0.06 + 0.1 * d.u[0], gej[1] + 0.08 + 0.1 * d.u[1]});
  } else if (d.label == kNgtBorderline) {
    oesophagus();
    const double t = -0.04 + 0.055 * d.u[0];  // tip height relative to the GEJ
    p.push_back({gej[0] + 0.25 * t, gej[1] + t});
  } else if (d.label == kNgtIncomplete) {
    oesophagus();
    p.push_back(gej);
    p.push_back({gej[0] + 0.05, gej[1] + 0.06});
    p.push_back({gej[0] + 0.07 + 0.08 * d.u[0], gej[1] + 0.2});
    p.push_back({gej[0] + 0.08 + 0.1 * d.u[0], 1.6});
  } else if (d.route == 0) {
    // Coiled in the oesophagus, the tip pointing back up.
    const double r = 0.03 + 0.02 * d.u[1];
    const Vec2 c{oa + 0.01, car + 0.04 + 0.12 * d.u[0]};
    p.push_back({c[0] - 0.2 * r, c[1] - r - 0.05});
    p.push_back({c[0], c[1] + r});
    p.push_back({c[0] + r, c[1]});
    p.push_back({c[0], c[1] - r});
    p.push_back({c[0] - r, c[1]});
    p.push_back({c[0] + 0.1 * r, c[1] + 1.1 * r});
    p.push_back({c[0] + 1.2 * r, c[1] - 0.2 * r});
    p.push_back({c[0] + 0.6 * r, c[1] - r - 0.07});
  } else {
    // Down the trachea into a main bronchus and the lower lung.
    p = {{A.trachea_top + 0.02 * (d.u[2] - 0.5), -0.4},
         {A.trachea_a(0.1), 0.1},
         {A.trachea_a(0.6 * car), 0.6 * car},
         {A.carina[0] + 0.002, car - 0.01}};
    if (d.u[3] < 0.7) {
      p.push_back({A.carina[0] - 0.06, car + 0.07});
      p.push_back({A.carina[0] - 0.13 - 0.06 * d.u[0], car + 0.17 + 0.1 * d.u[1]});
    } else {
      p.push_back({A.carina[0] + 0.07, car + 0.055});
      p.push_back({A.carina[0] + 0.15 + 0.05 * d.u[0], car + 0.15 + 0.1 * d.u[1]});
    }
  }
  return p;
}

}  // namespace

std::vector<Vec2> device_path(const Anatomy& A, const DeviceSpec& d) {
  switch (d.kind) {
    case DeviceKind::ett:
      return ett_path(A, d);
    case DeviceKind::ngt:
      return ngt_path(A, d);
    case DeviceKind::cvc:
      return cvc_path(A, d);
    case DeviceKind::swan:
      return swan_path(A, d);
  }
  return {};
}

namespace {

double smoothstep(double e0, double e1, double x) {
  double t = (x - e0) / (e1 - e0);
  t = t < 0 ? 0 : (t > 1 ? 1 : t);
  return t * t * (3 - 2 * t);
}
// Soft indicator of "inside" for a signed distance d (> 0 inside), edge half-width e.
double inside(double d, double e) {
  return smoothstep(-e, e, d);
}
double lerp(double a, double b, double t) {
  return a + (b - a) * t;
}

enum class Profile {
  gauss,  // soft line: exp(-d^2 / 2 sigma^2), width = FWHM (tubes, wires, vessels)
  band,   // bone: flat with a brighter cortex at the edges (ribs, clavicles)
  flat,   // soft-edged flat band (trachea, bronchi, marker letters)
};

struct Stroke {
  double width0 = 2, width1 = 2;  // pixels, at the start and the end of the curve
  double amp0 = 0.1, amp1 = 0.1;  // density at the centre, start and end
  Profile profile = Profile::gauss;
  double lung_weight = 0;  // amplitude *= (1 - w) + w * lung mask (ribs fade over the mediastinum)
  // false: add to the density; true: take the maximum with the air layer (overlapping
  // airway strokes form one union, without a darker spot where they overlap).
  bool air = false;
};

class Canvas {
 public:
  explicit Canvas(int64_t size)
      : size_(size),
        density(static_cast<size_t>(size * size), 0.f),
        lung(static_cast<size_t>(size * size), 0.f),
        air(static_cast<size_t>(size * size), 0.f) {}

  // Adds a stroke along the pixel polyline `pts`.
  void stroke(const std::vector<Vec2>& pts, const Stroke& s);
  int64_t size() const { return size_; }

 private:
  int64_t size_;

 public:
  std::vector<float> density;  // row-major size x size
  std::vector<float> lung;     // lung mask (0..1), for Stroke::lung_weight
  std::vector<float> air;      // airway air (subtracted from the density once drawn)

 private:
  std::vector<float> d2_, t_;  // scratch: squared distance and curve parameter per pixel
};

void Canvas::stroke(const std::vector<Vec2>& pts, const Stroke& s) {
  if (pts.size() < 2) return;
  const double wmax = std::max(s.width0, s.width1);
  const double reach = s.profile == Profile::gauss ? 1.3 * wmax + 1.0 : 0.7 * wmax + 1.5;
  std::vector<double> cum(pts.size(), 0.0);
  double minx = pts[0][0], maxx = minx, miny = pts[0][1], maxy = miny;
  for (size_t i = 1; i < pts.size(); ++i) {
    cum[i] = cum[i - 1] + std::hypot(pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1]);
    minx = std::min(minx, pts[i][0]), maxx = std::max(maxx, pts[i][0]);
    miny = std::min(miny, pts[i][1]), maxy = std::max(maxy, pts[i][1]);
  }
  const double total = std::max(cum.back(), 1e-9);
  const double last = static_cast<double>(size_ - 1);
  const double fx0 = std::max(0.0, std::floor(minx - reach)),
               fx1 = std::min(last, std::ceil(maxx + reach));
  const double fy0 = std::max(0.0, std::floor(miny - reach)),
               fy1 = std::min(last, std::ceil(maxy + reach));
  if (fx0 > fx1 || fy0 > fy1) return;
  const int64_t x0 = static_cast<int64_t>(fx0), x1 = static_cast<int64_t>(fx1);
  const int64_t y0 = static_cast<int64_t>(fy0), y1 = static_cast<int64_t>(fy1);
  const int64_t w = x1 - x0 + 1, h = y1 - y0 + 1;
  const float inf = std::numeric_limits<float>::infinity();
  d2_.assign(static_cast<size_t>(w * h), inf);
  t_.assign(static_cast<size_t>(w * h), 0.f);
  for (size_t i = 0; i + 1 < pts.size(); ++i) {
    const double px = pts[i][0], py = pts[i][1];
    const double dx = pts[i + 1][0] - px, dy = pts[i + 1][1] - py;
    const double l2 = dx * dx + dy * dy, len = std::sqrt(l2);
    const int64_t sx0 =
        std::max(x0, static_cast<int64_t>(std::floor(std::min(px, px + dx) - reach)));
    const int64_t sx1 =
        std::min(x1, static_cast<int64_t>(std::ceil(std::max(px, px + dx) + reach)));
    const int64_t sy0 =
        std::max(y0, static_cast<int64_t>(std::floor(std::min(py, py + dy) - reach)));
    const int64_t sy1 =
        std::min(y1, static_cast<int64_t>(std::ceil(std::max(py, py + dy) + reach)));
    for (int64_t y = sy0; y <= sy1; ++y) {
      float* d2row = d2_.data() + (y - y0) * w - x0;
      float* trow = t_.data() + (y - y0) * w - x0;
      const double vy = static_cast<double>(y) - py;
      for (int64_t x = sx0; x <= sx1; ++x) {
        const double vx = static_cast<double>(x) - px;
        double u = l2 > 0 ? (vx * dx + vy * dy) / l2 : 0.0;
        u = u < 0 ? 0 : (u > 1 ? 1 : u);
        const double ex = vx - u * dx, ey = vy - u * dy;
        const float d2 = static_cast<float>(ex * ex + ey * ey);
        if (d2 < d2row[x]) {
          d2row[x] = d2;
          trow[x] = static_cast<float>((cum[i] + u * len) / total);
        }
      }
    }
  }
  const float reach2 = static_cast<float>(reach * reach);
  for (int64_t y = y0; y <= y1; ++y) {
    for (int64_t x = x0; x <= x1; ++x) {
      const size_t k = static_cast<size_t>((y - y0) * w + (x - x0));
      const float d2 = d2_[k];
      if (!(d2 < reach2)) continue;
      const size_t idx = static_cast<size_t>(y * size_ + x);
      const double t = t_[k];
      const double width = lerp(s.width0, s.width1, t);
      double amp = lerp(s.amp0, s.amp1, t);
      if (s.lung_weight > 0) amp *= 1.0 - s.lung_weight + s.lung_weight * lung[idx];
      double v;
      if (s.profile == Profile::gauss) {
        const double sigma = 0.4247 * width;
        v = std::exp(-static_cast<double>(d2) / (2 * sigma * sigma));
      } else {
        const double d = std::sqrt(static_cast<double>(d2)), hw = 0.5 * width;
        if (s.profile == Profile::band) {
          const double e = std::max(0.7, 0.15 * hw);
          const double r = std::min(1.0, d / hw);
          v = (1 - smoothstep(hw - e, hw + e, d)) * (0.55 + 0.45 * r * r * r);
        } else {
          const double e = std::max(0.7, 0.3 * hw);
          v = 1 - smoothstep(hw - e, hw + e, d);
        }
      }
      if (s.air)
        air[idx] = std::max(air[idx], static_cast<float>(amp * v));
      else
        density[idx] += static_cast<float>(amp * v);
    }
  }
}

// Adds smooth random noise (a normal(0, sigma) value per cell of a grid with
// `cells` cells a side, bilinearly interpolated) times weight[pixel] (or 1).
void add_value_noise(std::vector<float>& out, int64_t size, int64_t cells, double sigma,
                     const std::vector<float>* weight, Generator& g) {
  const int64_t gn = cells + 2;
  std::vector<double> grid(static_cast<size_t>(gn * gn));
  for (auto& v : grid) v = g.normal(0, sigma);
  const double cell = static_cast<double>(size) / static_cast<double>(cells);
  for (int64_t y = 0; y < size; ++y) {
    const double fy = static_cast<double>(y) / cell;
    const int64_t y0 = static_cast<int64_t>(fy);
    const double wy = fy - static_cast<double>(y0);
    for (int64_t x = 0; x < size; ++x) {
      const double fx = static_cast<double>(x) / cell;
      const int64_t x0 = static_cast<int64_t>(fx);
      const double wx = fx - static_cast<double>(x0);
      const double* c = grid.data() + y0 * gn + x0;
      const double v =
          (c[0] * (1 - wx) + c[1] * wx) * (1 - wy) + (c[gn] * (1 - wx) + c[gn + 1] * wx) * wy;
      const size_t idx = static_cast<size_t>(y * size + x);
      out[idx] += static_cast<float>(weight ? v * (*weight)[idx] : v);
    }
  }
}

// The smooth, per-pixel part: body, arms, lungs, heart, mediastinum, spine,
// stomach bubble, breast shadows. Fills canvas.density and canvas.lung.
void render_fields(Canvas& cv, const Anatomy& A, const Pose& pose) {
  const int64_t S = cv.size();
  const double size = static_cast<double>(S);
  // Anatomy coordinates are affine in the pixel coordinates.
  const Vec2 o = pose.to_anatomy({0, 0}, size);
  const Vec2 ex = pose.to_anatomy({1, 0}, size), ey = pose.to_anatomy({0, 1}, size);
  const double dax = ex[0] - o[0], dbx = ex[1] - o[1], day = ey[0] - o[0], dby = ey[1] - o[1];
  const double hcos = std::cos(A.heart_rot), hsin = std::sin(A.heart_rot);
  const double knob_b = A.carina[1] - 0.07;
  const double vert_period = A.rib_step * 0.8;
  for (int64_t y = 0; y < S; ++y) {
    for (int64_t x = 0; x < S; ++x) {
      const double fx = static_cast<double>(x), fy = static_cast<double>(y);
      const double a = o[0] + dax * fx + day * fy, b = o[1] + dbx * fx + dby * fy;
      const double q = a - A.mid, aq = std::abs(q);
      const int side = q < 0 ? 0 : 1;
      // Body: neck widening into sloping shoulders, then the chest wall.
      const double wb =
          lerp(A.neck_w, A.chest_w, smoothstep(A.clavicle_b - 0.17, A.clavicle_b + 0.05, b)) *
          (1 - 0.04 * smoothstep(0.8, 1.2, b));
      const double body = inside(wb - aq, 0.012);
      const size_t idx = static_cast<size_t>(y * S + x);
      if (body == 0 && !A.arms_visible) continue;  // air outside the patient (the canvas is 0)
      const double r = std::min(1.0, aq / wb);
      // Thickest in the middle: the mediastinum and abdomen are brighter than the chest wall.
      double dens = body * A.body_habitus * (0.36 + 0.34 * std::sqrt(1 - r * r));
      if (A.arms_visible) {
        const double in_arm = inside(aq - (A.chest_w + 0.03), 0.012) *
                              inside(A.chest_w + 0.16 - aq, 0.02) *
                              inside(b - (A.clavicle_b - 0.04), 0.04);
        const double humerus = inside(0.028 - std::abs(aq - A.chest_w - 0.1), 0.008);
        const double hx = (aq - A.chest_w - 0.07) / 0.065, hy = (b - A.clavicle_b - 0.01) / 0.07;
        const double head = inside(1 - std::sqrt(hx * hx + hy * hy), 0.15);
        dens += in_arm * (0.36 * A.body_habitus + 0.1 * humerus) + 0.1 * head;
      }
      // Lungs: apex parabola, convex lateral rib cage, medial edge, diaphragm dome.
      const double apex = A.apex_b[side], lw = A.lung_w[side];
      const double d_top = b - (apex + 1.8 * (aq - 0.13) * (aq - 0.13));
      const double tw = std::clamp((b - apex) / 0.5, 0.0, 1.0);
      const double d_lat = lw - (lw - 0.19) * (1 - tw) * (1 - tw) * (1 - tw) - aq;
      const double d_med = aq - 0.03;
      const double qd = 0.5 * lw;
      const double kd = (A.cpa_b[side] - A.dome_b[side]) / ((lw - qd) * (lw - qd));
      const double d_dia = A.dome_b[side] + (aq > qd ? kd : 0.6 * kd) * (aq - qd) * (aq - qd) - b;
      double lung_eff = 0;
      if (d_top > -0.012 && d_lat > -0.01 && d_med > -0.01 && d_dia > -0.008) {
        const double lung_mask =
            inside(d_top, 0.012) * inside(d_lat, 0.01) * inside(d_med, 0.01) * inside(d_dia, 0.008);
        // Heart: a tilted ellipse sitting on the diaphragm, bulging to the image right. The
        // lower half is stretched down into the diaphragm: no lung under the heart.
        const double hx = a - A.heart_c[0], hy = b - A.heart_c[1];
        const double hu = (hcos * hx + hsin * hy) / A.heart_r[0];
        const double hv0 = -hsin * hx + hcos * hy,
                     hv = hv0 / (A.heart_r[1] * (hv0 > 0 ? 1.8 : 1.0));
        const double heart = inside(
            (1 - std::sqrt(hu * hu + hv * hv)) * std::min(A.heart_r[0], A.heart_r[1]), 0.008);
        // Mediastinum, narrow above, with the aortic knob on the image right.
        double wm = 0.06 + 0.015 * smoothstep(0.15, 0.45, b);
        if (side == 1 && std::abs(b - knob_b) < 0.12)
          wm += 0.03 * std::exp(-((b - knob_b) / 0.03) * ((b - knob_b) / 0.03));
        const double medi = inside(wm - aq, 0.01);
        lung_eff = lung_mask * (1 - heart) * (1 - medi);
        const double core = std::min({d_top, d_lat, d_dia, 0.07});
        const double shade = 0.75 + 0.25 * smoothstep(0.0, 0.07, core);
        dens -= 0.4 * lung_eff * shade * A.body_habitus;
      }
      // Spine: faint vertebral bodies, disc spaces, pedicle rings (mostly seen through the
      // mediastinum).
      const double hw_sp = 0.032 + 0.014 * b;
      const double spine = inside(hw_sp - aq, 0.006);
      if (spine > 0) {
        const double phase = (b - A.rib_b0) / vert_period;
        const double fr = phase - std::floor(phase);
        const double vbody = smoothstep(0.0, 0.15, fr) * (1 - smoothstep(0.75, 0.95, fr));
        const double pq = aq - 0.68 * hw_sp, pb = (fr - 0.35) * vert_period;
        const double pr = std::sqrt(pq * pq + pb * pb) / (0.25 * hw_sp);
        const double ring = std::exp(-((pr - 1) / 0.35) * ((pr - 1) / 0.35));
        dens += spine * (0.03 + 0.02 * vbody + 0.015 * ring);
      }
      // Gastric bubble under the image-right dome, with a flat air-fluid level.
      const double sx = (a - A.stomach_c[0]) / A.stomach_r[0],
                   sy = (b - A.stomach_c[1]) / A.stomach_r[1];
      if (sx * sx + sy * sy < 1.6) {
        const double bubble = inside(1 - std::sqrt(sx * sx + sy * sy), 0.25) *
                              inside(A.stomach_c[1] + 0.45 * A.stomach_r[1] - b, 0.004);
        dens -= 0.22 * bubble;
      }
      if (A.breasts) {
        const double bx = (aq - 0.25) / 0.17, by = (b - A.dome_b[side] + 0.03) / 0.11;
        dens += 0.06 * inside(1 - std::sqrt(bx * bx + by * by), 0.3) * body;
      }
      cv.density[idx] = static_cast<float>(dens);
      cv.lung[idx] = static_cast<float>(lung_eff);
    }
  }
}

// Maps a spline through anatomy control points to pixels.
std::vector<Vec2> to_px(const std::vector<Vec2>& ctrl_ab, const Pose& pose, double size) {
  std::vector<Vec2> pts = catmull_rom(ctrl_ab, 2.5 / size);  // ~2.5 px chords: smooth enough
  for (auto& p : pts) p = pose.to_px(p, size);
  return pts;
}

// Trachea and bronchi (air: negative density), clavicles, ribs, lung vessels.
void render_skeleton(Canvas& cv, const Anatomy& A, const Pose& pose, Generator& g) {
  const double S = static_cast<double>(cv.size());
  const double m = A.mid;
  const Vec2 car{A.carina[0], A.carina[1]};
  {
    std::vector<Vec2> ctrl{{A.trachea_top, -0.3}};
    for (double t = 0.0; t <= 1.0001; t += 0.25)
      ctrl.push_back({A.trachea_a(t * car[1]), t * car[1]});
    cv.stroke(to_px(ctrl, pose, S), {0.034 * S, 0.028 * S, 0.08, 0.11, Profile::flat, 0, true});
    // Right main bronchus (image left) is steeper and wider than the left.
    cv.stroke(
        to_px({car, {car[0] - 0.055, car[1] + 0.06}, {car[0] - 0.095, car[1] + 0.13}}, pose, S),
        {0.026 * S, 0.012 * S, 0.11, 0.035, Profile::flat, 0, true});
    cv.stroke(
        to_px({car, {car[0] + 0.065, car[1] + 0.045}, {car[0] + 0.13, car[1] + 0.1}}, pose, S),
        {0.022 * S, 0.01 * S, 0.11, 0.035, Profile::flat, 0, true});
    for (size_t i = 0; i < cv.density.size(); ++i) cv.density[i] -= cv.air[i];
  }
  for (int side = 0; side < 2; ++side) {
    const double s = side == 0 ? -1.0 : 1.0;
    const double cb = A.clavicle_b + g.normal(0, 0.004);
    cv.stroke(to_px({{m + s * 0.03, cb + 0.012},
                     {m + s * 0.1, cb - 0.008},
                     {m + s * 0.2, cb - 0.022},
                     {m + s * 0.3, cb - 0.042},
                     {m + s * 0.37, cb - 0.036}},
                    pose, S),
              {0.028 * S, 0.022 * S, 0.12, 0.1, Profile::band, 0.3});
    const double lw = A.lung_w[side];
    for (int k = 0; k < 10; ++k) {
      const double kk = static_cast<double>(k);
      const double y0 = A.rib_b0 + kk * A.rib_step * (1 + 0.03 * kk) + g.normal(0, 0.003);
      const double qend = std::min(lw + 0.025, 0.15 + 0.075 * kk);
      const double drop = 0.13 + 0.008 * kk;  // posterior ribs arch up, then fall laterally
      const std::vector<Vec2> post{{m + s * 0.03, y0},
                                   {m + s * 0.08, y0 - 0.02},
                                   {m + s * 0.4 * qend, y0 - 0.025},
                                   {m + s * 0.72 * qend, y0 + 0.01},
                                   {m + s * 0.93 * qend, y0 + 0.45 * drop},
                                   {m + s * qend, y0 + drop}};
      cv.stroke(to_px(post, pose, S), {0.024 * S, 0.018 * S, 0.1, 0.075, Profile::band, 0.6});
      if (k >= 1 && k < 8) {
        // Anterior rib: from the lateral end down toward the sternum, fainter and wider.
        const std::vector<Vec2> ant{{m + s * qend, y0 + drop},
                                    {m + s * (qend - 0.04), y0 + drop + 0.03},
                                    {m + s * 0.6 * qend, y0 + drop + 0.08},
                                    {m + s * 0.3 * qend, y0 + drop + 0.14}};
        cv.stroke(to_px(ant, pose, S), {0.03 * S, 0.026 * S, 0.07, 0.02, Profile::band, 0.7});
      }
    }
    // Lung vessels: branches from the hilum, visible only over the lungs.
    const Vec2 hilum{m + s * 0.1, car[1] + 0.07};
    const int roots = 6 + static_cast<int>(g.below(3));
    for (int k = 0; k < roots; ++k) {
      const double ang0 = (-1.6 + 3.2 * (static_cast<double>(k) + g.uniform()) / roots);
      double ang = ang0, len = g.uniform(0.14, 0.26);
      std::vector<Vec2> ctrl{{hilum[0] + g.normal(0, 0.01), hilum[1] + g.normal(0, 0.02)}};
      for (int j = 0; j < 4; ++j) {
        ang += g.normal(0, 0.25);
        const Vec2& p = ctrl.back();
        ctrl.push_back({p[0] + s * std::cos(ang) * len / 4, p[1] + std::sin(ang) * len / 4});
      }
      const double amp = g.uniform(0.035, 0.06);
      cv.stroke(to_px(ctrl, pose, S), {0.012 * S, 0.004 * S, amp, 0.2 * amp, Profile::gauss, 1.0});
      for (int c = 0; c < 2; ++c) {
        const Vec2 p = ctrl[1 + g.below(3)];
        double ca = ang0 + g.normal(0, 0.6);
        std::vector<Vec2> br{p};
        for (int j = 0; j < 3; ++j) {
          ca += g.normal(0, 0.25);
          br.push_back(
              {br.back()[0] + s * std::cos(ca) * len / 5, br.back()[1] + std::sin(ca) * len / 5});
        }
        cv.stroke(to_px(br, pose, S),
                  {0.007 * S, 0.003 * S, 0.6 * amp, 0.1 * amp, Profile::gauss, 1.0});
      }
    }
  }
}

// ECG electrodes with their wires, and the side marker: bright confusers.
void render_extras(Canvas& cv, const Anatomy& A, const Pose& pose, const Look& look, Generator& g) {
  const double S = static_cast<double>(cv.size());
  const double u = g.uniform();
  const int wires = u < 0.35 ? 0 : (u < 0.65 ? 1 : (u < 0.85 ? 2 : 3));
  for (int k = 0; k < wires; ++k) {
    const Vec2 e{A.mid + g.uniform(-0.38, 0.38), g.uniform(0.12, 0.75)};
    const double ang = g.uniform(0, 2 * std::numbers::pi);
    const double dx = std::cos(ang), dy = std::sin(ang);
    std::vector<Vec2> ctrl{e};
    for (double t : {0.15, 0.4, 0.7, 1.1, 1.6}) {
      const double bend = g.normal(0, 0.05);
      ctrl.push_back({e[0] + dx * t - dy * bend, e[1] + dy * t + dx * bend});
    }
    const double amp = g.uniform(0.07, 0.16);
    cv.stroke(to_px(ctrl, pose, S), {0.0055 * S, 0.0055 * S, amp, amp, Profile::gauss, 0});
    std::vector<Vec2> ring;
    for (int j = 0; j <= 24; ++j) {
      const double t = 2 * std::numbers::pi * j / 24.0;
      ring.push_back({e[0] + 0.02 * std::cos(t), e[1] + 0.02 * std::sin(t)});
    }
    for (auto& p : ring) p = pose.to_px(p, S);
    cv.stroke(ring, {0.006 * S, 0.006 * S, 0.2, 0.2, Profile::gauss, 0});
    const Vec2 c = pose.to_px(e, S);
    cv.stroke({c, {c[0] + 0.5, c[1]}}, {0.014 * S, 0.014 * S, 0.25, 0.25, Profile::gauss, 0});
  }
  if (look.marker) {
    // An "L" in a top corner, in image coordinates (markers are not rotated with the patient).
    const double x0 = (g.uniform() < 0.5 ? g.uniform(0.05, 0.12) : g.uniform(0.82, 0.9)) * S;
    const double y0 = g.uniform(0.04, 0.1) * S, h = 0.06 * S;
    const Stroke st{0.012 * S, 0.012 * S, 0.9, 0.9, Profile::flat, 0};
    cv.stroke({{x0, y0}, {x0, y0 + h}}, st);
    cv.stroke({{x0, y0 + h}, {x0 + 0.6 * h, y0 + h}}, st);
  }
}

}  // namespace

Image render_chest(const Anatomy& anatomy, const Pose& pose, const Look& look,
                   const std::vector<TubeStroke>& tubes, Generator& g, int64_t size) {
  RZ_CHECK(size >= 16, "render_chest: size must be >= 16, got ", size);
  Canvas cv(size);
  render_fields(cv, anatomy, pose);
  // Lung texture: mottled parenchyma at two scales.
  add_value_noise(cv.density, size, 12, 0.02, &cv.lung, g);
  add_value_noise(cv.density, size, 40, 0.015, &cv.lung, g);
  render_skeleton(cv, anatomy, pose, g);
  render_extras(cv, anatomy, pose, look, g);
  for (const TubeStroke& t : tubes) {
    if (t.double_wall)
      cv.stroke(t.px,
                {2.6 * t.width_px, 2.6 * t.width_px, 0.3 * t.amp, 0.3 * t.amp, Profile::gauss, 0});
    cv.stroke(t.px, {t.width_px, t.width_px, t.amp, t.amp, Profile::gauss, 0});
  }

  // Density -> [0, 1] -> gamma through a lookup table (4096 steps, linear in between).
  constexpr int kLut = 4096;
  std::vector<float> lut(kLut + 2);
  for (int i = 0; i <= kLut + 1; ++i)
    lut[static_cast<size_t>(i)] = static_cast<float>(
        255.0 * std::pow(std::min(1.0, static_cast<double>(i) / kLut), look.gamma));
  // Low-frequency noise in intensity (grey levels), on top of the white noise.
  std::vector<float> lowf(static_cast<size_t>(size * size), 0.f);
  add_value_noise(lowf, size, std::max<int64_t>(4, size / 16), look.noise_corr_sigma, nullptr, g);
  const double S = static_cast<double>(size);

  // Exposure before the 8-bit mapping.
  std::vector<float> exposure(static_cast<size_t>(size * size));
  for (int64_t y = 0; y < size; ++y) {
    const double v = static_cast<double>(y) / S - 0.5;
    for (int64_t x = 0; x < size; ++x) {
      const double u = static_cast<double>(x) / S - 0.5;
      const double illum = look.illum_x * u + look.illum_y * v + look.illum_r * (u * u + v * v);
      const size_t idx = static_cast<size_t>(y * size + x);
      exposure[idx] = static_cast<float>(look.offset + look.gain * cv.density[idx] + illum);
    }
  }
  // Windowing: a radiograph's processing maps the detector's range onto the
  // display range, so dense regions (mediastinum, heart, upper abdomen) stay
  // below white and the lines over them stay visible. The exposure is scaled so
  // that its 99.5th percentile lands at kWindowTop: only small bright objects
  // (side markers, electrodes, the odd bone edge) clip. Clipping everything
  // above 1 instead whitened the mediastinum and heart of about a third of the
  // images (tests/data/test_synth.cpp), and with them the tips that decide the
  // CVC and NGT labels.
  constexpr double kWindowTop = 0.97;
  double window = 1.0;
  {
    std::vector<float> sorted = exposure;
    const auto q = sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() * 995 / 1000);
    std::nth_element(sorted.begin(), q, sorted.end());
    if (*q > kWindowTop) window = kWindowTop / *q;
  }

  Image img(size, size, 1);
  for (int64_t y = 0; y < size; ++y) {
    uint8_t* row = img.row(y);
    for (int64_t x = 0; x < size; ++x) {
      const size_t idx = static_cast<size_t>(y * size + x);
      double t = static_cast<double>(exposure[idx]) * window;
      t = std::clamp(t, 0.0, 1.0) * kLut;
      const int64_t i0 = static_cast<int64_t>(t);
      const double f = t - static_cast<double>(i0);
      const double base =
          lut[static_cast<size_t>(i0)] * (1 - f) + lut[static_cast<size_t>(i0 + 1)] * f;
      // Pixel noise: the sum of four 16-bit uniforms (Irwin-Hall), scaled to unit variance;
      // one generator step per pixel instead of a Box-Muller log and sincos.
      const uint64_t bits = g.next_u64();
      const double sum = static_cast<double>((bits & 0xffff) + ((bits >> 16) & 0xffff) +
                                             ((bits >> 32) & 0xffff) + (bits >> 48));
      const double white = (sum / 65536.0 - 2.0) * std::sqrt(3.0);
      row[x] = detail::saturate_u8(static_cast<float>(base + lowf[idx] + look.noise_sigma * white));
    }
  }
  return img;
}

}  // namespace rz::data::synth_detail
