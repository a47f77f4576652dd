// Optimizer kernels against values worked out by hand from the published
// update rules (torch.optim.SGD / Adam / AdamW docs). Every expected number is
// a literal with its derivation beside it; nothing here re-runs the update
// formulas, so a wrong kernel cannot agree with a wrong oracle.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "kernels/cpu/optim.h"

namespace {

// fp32 runs three steps on values near 1: a few ulps (1.2e-7 each) of drift.
template <typename T>
constexpr double kTol = 1e-6;
template <>
constexpr double kTol<double> = 1e-12;

template <typename T>
std::vector<T> make(std::initializer_list<double> xs) {
  std::vector<T> v;
  for (double x : xs) v.push_back(static_cast<T>(x));
  return v;
}

template <typename T>
void check_close(const std::vector<T>& got, std::initializer_list<double> want) {
  REQUIRE(got.size() == want.size());
  size_t i = 0;
  for (double w : want) {
    CAPTURE(i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(w).epsilon(kTol<T>));
    ++i;
  }
}

// Shared SGD problem: 3 parameters, 3 steps, values exact in binary.
//   p0 = [1, -2, 0.5]
//   g1 = [0.5, -1, 2]   g2 = [0.25, 0.5, -1]   g3 = [-0.5, 1, 0]
template <typename T>
struct SgdProblem {
  std::vector<T> p = make<T>({1.0, -2.0, 0.5});
  std::vector<T> buf;
  std::vector<std::vector<T>> g = {make<T>({0.5, -1.0, 2.0}), make<T>({0.25, 0.5, -1.0}),
                                   make<T>({-0.5, 1.0, 0.0})};

  void step(int k, const rz::SgdHyper& h) {
    T* b = buf.empty() ? nullptr : buf.data();
    rz::sgd_step_cpu(p.data(), g[static_cast<size_t>(k)].data(), b, static_cast<int64_t>(p.size()),
                     h, k == 0);
  }
};

// Shared Adam problem: 2 parameters, 3 steps, lr 0.1, betas (0.9, 0.999), eps 1e-8.
//   p0 = [1, -2];  g1 = [0.5, -1]   g2 = [0.25, 0.5]   g3 = [-0.5, 1]
// Bias corrections: bc1 = 1 - 0.9^t, bc2 = 1 - 0.999^t
//   t=1: bc1 = 0.1,   lr/bc1 = 1,              sqrt(bc2) = sqrt(0.001)    = 0.0316227766
//   t=2: bc1 = 0.19,  lr/bc1 = 0.5263157895,   sqrt(bc2) = sqrt(0.001999) = 0.0447101778
//   t=3: bc1 = 0.271, lr/bc1 = 0.3690036900,   sqrt(bc2) = sqrt(0.002997001) = 0.0547448719
template <typename T>
struct AdamProblem {
  std::vector<T> p = make<T>({1.0, -2.0});
  std::vector<T> m = make<T>({0.0, 0.0});
  std::vector<T> v = make<T>({0.0, 0.0});
  std::vector<std::vector<T>> g = {make<T>({0.5, -1.0}), make<T>({0.25, 0.5}),
                                   make<T>({-0.5, 1.0})};

  void step(int k, const rz::AdamHyper& h) {
    rz::adam_step_cpu(p.data(), g[static_cast<size_t>(k)].data(), m.data(), v.data(),
                      static_cast<int64_t>(p.size()), h, k + 1);
  }
};

}  // namespace

TEST_CASE_TEMPLATE("optim: sgd plain", T, float, double) {
  // p -= 0.1*g, no buffer (nullptr is allowed without momentum).
  //   p1 = [1-0.05, -2+0.1, 0.5-0.2]       = [0.95, -1.9, 0.3]
  //   p2 = [0.95-0.025, -1.9-0.05, 0.3+0.1] = [0.925, -1.95, 0.4]
  //   p3 = [0.925+0.05, -1.95-0.1, 0.4-0]  = [0.975, -2.05, 0.4]
  SgdProblem<T> s;
  const rz::SgdHyper h{.lr = 0.1};
  s.step(0, h);
  check_close(s.p, {0.95, -1.9, 0.3});
  s.step(1, h);
  check_close(s.p, {0.925, -1.95, 0.4});
  s.step(2, h);
  check_close(s.p, {0.975, -2.05, 0.4});
}

TEST_CASE_TEMPLATE("optim: sgd momentum, first step copies the gradient", T, float, double) {
  // momentum 0.9: buf1 = g1 (whatever the buffer held), buf_t = 0.9*buf + g, p -= 0.1*buf.
  //   buf1 = [0.5, -1, 2]                            p1 = [0.95, -1.9, 0.3]
  //   buf2 = [0.45+0.25, -0.9+0.5, 1.8-1]
  //        = [0.7, -0.4, 0.8]                        p2 = [0.88, -1.86, 0.22]
  //   buf3 = [0.63-0.5, -0.36+1, 0.72+0]
  //        = [0.13, 0.64, 0.72]                      p3 = [0.867, -1.924, 0.148]
  SgdProblem<T> s;
  s.buf = make<T>({123.0, -7.0, 1e30});  // garbage: step 1 must not read it
  const rz::SgdHyper h{.lr = 0.1, .momentum = 0.9};
  s.step(0, h);
  check_close(s.buf, {0.5, -1.0, 2.0});
  check_close(s.p, {0.95, -1.9, 0.3});
  s.step(1, h);
  check_close(s.buf, {0.7, -0.4, 0.8});
  check_close(s.p, {0.88, -1.86, 0.22});
  s.step(2, h);
  check_close(s.buf, {0.13, 0.64, 0.72});
  check_close(s.p, {0.867, -1.924, 0.148});
}

TEST_CASE_TEMPLATE("optim: sgd nesterov", T, float, double) {
  // Same buffers as plain momentum; the step uses d = g + 0.9*buf.
  //   d1 = g1 + 0.9*[0.5, -1, 2] = [0.95, -1.9, 3.8]        p1 = [0.905, -1.81, 0.12]
  //   d2 = g2 + 0.9*[0.7, -0.4, 0.8] = [0.88, 0.14, -0.28]  p2 = [0.817, -1.824, 0.148]
  //   d3 = g3 + 0.9*[0.13, 0.64, 0.72]
  //      = [-0.383, 1.576, 0.648]                           p3 = [0.8553, -1.9816, 0.0832]
  SgdProblem<T> s;
  s.buf = make<T>({0.0, 0.0, 0.0});
  const rz::SgdHyper h{.lr = 0.1, .momentum = 0.9, .nesterov = true};
  s.step(0, h);
  check_close(s.p, {0.905, -1.81, 0.12});
  s.step(1, h);
  check_close(s.buf, {0.7, -0.4, 0.8});
  check_close(s.p, {0.817, -1.824, 0.148});
  s.step(2, h);
  check_close(s.p, {0.8553, -1.9816, 0.0832});
}

TEST_CASE_TEMPLATE("optim: sgd dampening spares the first step", T, float, double) {
  // dampening 0.5: buf1 = g1 undamped (PyTorch), then buf = 0.9*buf + 0.5*g.
  //   buf1 = [0.5, -1, 2]                                   p1 = [0.95, -1.9, 0.3]
  //   buf2 = [0.45+0.125, -0.9+0.25, 1.8-0.5]
  //        = [0.575, -0.65, 1.3]                            p2 = [0.8925, -1.835, 0.17]
  //   buf3 = [0.5175-0.25, -0.585+0.5, 1.17+0]
  //        = [0.2675, -0.085, 1.17]                         p3 = [0.86575, -1.8265, 0.053]
  SgdProblem<T> s;
  s.buf = make<T>({0.0, 0.0, 0.0});
  const rz::SgdHyper h{.lr = 0.1, .momentum = 0.9, .dampening = 0.5};
  s.step(0, h);
  check_close(s.buf, {0.5, -1.0, 2.0});
  check_close(s.p, {0.95, -1.9, 0.3});
  s.step(1, h);
  check_close(s.buf, {0.575, -0.65, 1.3});
  check_close(s.p, {0.8925, -1.835, 0.17});
  s.step(2, h);
  check_close(s.buf, {0.2675, -0.085, 1.17});
  check_close(s.p, {0.86575, -1.8265, 0.053});
}

TEST_CASE_TEMPLATE("optim: sgd weight decay", T, float, double) {
  SUBCASE("without momentum") {
    // d = g + 0.1*p; p -= 0.1*d.
    //   d1 = [0.5+0.1, -1-0.2, 2+0.05]          = [0.6, -1.2, 2.05]
    //   p1 = [0.94, -1.88, 0.295]
    //   d2 = [0.25+0.094, 0.5-0.188, -1+0.0295]  = [0.344, 0.312, -0.9705]
    //   p2 = [0.9056, -1.9112, 0.39205]
    //   d3 = [-0.5+0.09056, 1-0.19112, 0.039205] = [-0.40944, 0.80888, 0.039205]
    //   p3 = [0.946544, -1.992088, 0.3881295]
    SgdProblem<T> s;
    const rz::SgdHyper h{.lr = 0.1, .weight_decay = 0.1};
    s.step(0, h);
    check_close(s.p, {0.94, -1.88, 0.295});
    s.step(1, h);
    check_close(s.p, {0.9056, -1.9112, 0.39205});
    s.step(2, h);
    check_close(s.p, {0.946544, -1.992088, 0.3881295});
  }
  SUBCASE("decay enters the momentum buffer") {
    // d as above from the current p; buf = 0.9*buf + d.
    //   buf1 = d1 = [0.6, -1.2, 2.05]                        p1 = [0.94, -1.88, 0.295]
    //   buf2 = 0.9*buf1 + [0.344, 0.312, -0.9705]
    //        = [0.884, -0.768, 0.8745]                       p2 = [0.8516, -1.8032, 0.20755]
    //   d3 = g3 + 0.1*p2 = [-0.41484, 0.81968, 0.020755]
    //   buf3 = [0.7956-0.41484, -0.6912+0.81968, 0.78705+0.020755]
    //        = [0.38076, 0.12848, 0.807805]                  p3 = [0.813524, -1.816048, 0.1267695]
    SgdProblem<T> s;
    s.buf = make<T>({0.0, 0.0, 0.0});
    const rz::SgdHyper h{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1};
    s.step(0, h);
    check_close(s.buf, {0.6, -1.2, 2.05});
    check_close(s.p, {0.94, -1.88, 0.295});
    s.step(1, h);
    check_close(s.buf, {0.884, -0.768, 0.8745});
    check_close(s.p, {0.8516, -1.8032, 0.20755});
    s.step(2, h);
    check_close(s.buf, {0.38076, 0.12848, 0.807805});
    check_close(s.p, {0.813524, -1.816048, 0.1267695});
  }
}

TEST_CASE_TEMPLATE("optim: adam", T, float, double) {
  // m = 0.9*m + 0.1*g;  v = 0.999*v + 0.001*g^2;  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
  // t=1: m = [0.05, -0.1], v = [0.00025, 0.001]; m_hat = g, sqrt(v_hat) = |g|, so
  //      the update is lr*g/(|g|+eps): 0.1*0.5/0.50000001 = 0.099999998, 0.1/1.00000001
  //      = 0.099999999 -> p1 = [0.900000002, -1.900000001]. Bias correction makes the
  //      first step ~lr per element whatever |g| is (uncorrected it would be
  //      0.1*0.05/sqrt(0.00025) = 0.316).
  // t=2: m = [0.045+0.025, -0.09+0.05] = [0.07, -0.04]
  //      v = [0.00024975+0.0000625, 0.000999+0.00025] = [0.00031225, 0.001249]
  //      m_hat = m/0.19 = [0.3684210526, -0.2105263158]
  //      sqrt(v_hat) = sqrt(v)/0.0447101778 = [0.3952253807, 0.7904507614]
  //      update = m_hat/(sqrt(v_hat)+1e-8)*0.1 = [0.09321796152, -0.02663370363]
  //      p2 = [0.806782040477462, -1.87336629737090]
  // t=3: m = [0.063-0.05, -0.036+0.1] = [0.013, 0.064]
  //      v = [0.00031193775+0.00025, 0.001247751+0.001] = [0.00056193775, 0.002247751]
  //      m_hat = m/0.271 = [0.04797047970, 0.2361623616]
  //      sqrt(v_hat) = sqrt(v)/0.0547448719 = [0.4330127260, 0.8660254519]
  //      update = [0.01107830688, 0.02726967878]
  //      p3 = [0.795703733601094, -1.90063597615069]
  AdamProblem<T> a;
  const rz::AdamHyper h{.lr = 0.1};
  a.step(0, h);
  check_close(a.m, {0.05, -0.1});
  check_close(a.v, {0.00025, 0.001});
  check_close(a.p, {0.900000002, -1.900000001});
  a.step(1, h);
  check_close(a.m, {0.07, -0.04});
  check_close(a.v, {0.00031225, 0.001249});
  check_close(a.p, {0.806782040477462, -1.87336629737090});
  a.step(2, h);
  check_close(a.m, {0.013, 0.064});
  check_close(a.v, {0.00056193775, 0.002247751});
  check_close(a.p, {0.795703733601094, -1.90063597615069});
}

TEST_CASE_TEMPLATE("optim: adam with L2 weight decay", T, float, double) {
  // Adam (coupled): g' = g + 0.1*p enters both moments.
  // t=1: g' = [0.5+0.1, -1-0.2] = [0.6, -1.2]; first step ~lr again:
  //      update = 0.1*0.6/0.60000001 = 0.0999999983, 0.1*1.2/1.20000001 = 0.0999999992
  //      p1 = [0.900000001666667, -1.90000000083333]
  // t=2: g' = [0.25+0.0900000001667, 0.5-0.190000000083] = [0.3400000001667, 0.3099999999167]
  //      m = [0.0880000000167, -0.0770000000083], v = [0.000475240000113, 0.00153465999995]
  //      update = [0.0949902358053, -0.0462527361906]
  //      p2 = [0.805009765861319, -1.85374726464276]
  // t=3: g' = [-0.5+0.0805009766, 1-0.1853747265] = [-0.4194990234, 0.8146252735]
  //      m = [0.0372500976736, 0.0121625273461], v = [0.000650744190758, 0.00219673967623]
  //      update = [0.0294982607108, 0.00524214078901]
  //      p3 = [0.775511505150507, -1.85898940543177]
  AdamProblem<T> a;
  const rz::AdamHyper h{.lr = 0.1, .weight_decay = 0.1};
  a.step(0, h);
  check_close(a.m, {0.06, -0.12});
  check_close(a.p, {0.900000001666667, -1.90000000083333});
  a.step(1, h);
  check_close(a.p, {0.805009765861319, -1.85374726464276});
  a.step(2, h);
  check_close(a.m, {0.0372500976736132, 0.0121625273460724});
  check_close(a.v, {0.000650744190758409, 0.00219673967623154});
  check_close(a.p, {0.775511505150507, -1.85898940543177});
}

TEST_CASE_TEMPLATE("optim: adamw decoupled weight decay", T, float, double) {
  // AdamW: p *= 1 - lr*wd = 0.99 before the Adam step; the moments see the raw
  // gradient, so m, v and every Adam update equal the plain Adam case.
  //   p1 = 0.99*[1, -2] - [0.099999998, -0.099999999] = [0.890000002, -1.880000001]
  //   p2 = 0.99*p1 - [0.0932179615225383, -0.0266337036290970]
  //      = [0.787882040457462, -1.83456629736090]
  //   p3 = 0.99*p2 - [0.0110783068763681, 0.0272696787797893]
  //      = [0.768924913176519, -1.84349031316708]
  AdamProblem<T> a;
  const rz::AdamHyper h{.lr = 0.1, .weight_decay = 0.1, .decoupled = true};
  a.step(0, h);
  check_close(a.m, {0.05, -0.1});
  check_close(a.p, {0.890000002, -1.880000001});
  a.step(1, h);
  check_close(a.p, {0.787882040457462, -1.83456629736090});
  a.step(2, h);
  check_close(a.m, {0.013, 0.064});
  check_close(a.v, {0.00056193775, 0.002247751});
  check_close(a.p, {0.768924913176519, -1.84349031316708});
}

TEST_CASE_TEMPLATE("optim: adam eps is added after bias correction", T, float, double) {
  // g = +-1e-8 = eps, t=1: m = +-1e-9, v = 1e-19, sqrt(v)/sqrt(0.001) = 1e-8, so
  //   update = (lr/0.1) * 1e-9 / (1e-8 + 1e-8) = 0.1 * 0.5 = 0.05  ->  p1 = [0.95, 1.05].
  // Other placements give other numbers: eps ignored -> 0.1; eps added to the
  // uncorrected sqrt(v) (TF's epsilon-hat form, lr*sqrt(bc2)/bc1 * m/(sqrt(v)+eps))
  //   -> 0.0316227766 * 1e-9/(3.16227766e-10 + 1e-8) = 0.00306534.
  std::vector<T> p = make<T>({1.0, 1.0});
  std::vector<T> g = make<T>({1e-8, -1e-8});
  std::vector<T> m = make<T>({0.0, 0.0});
  std::vector<T> v = make<T>({0.0, 0.0});
  const rz::AdamHyper h{.lr = 0.1, .eps = 1e-8};
  rz::adam_step_cpu(p.data(), g.data(), m.data(), v.data(), 2, h, 1);
  check_close(p, {0.95, 1.05});
  // Tiny states: compare relatively (scale 0), an absolute tolerance would pass anything.
  CHECK(static_cast<double>(v[0]) == doctest::Approx(1e-19).epsilon(1e-5).scale(0));
  CHECK(static_cast<double>(m[1]) == doctest::Approx(-1e-9).epsilon(1e-5).scale(0));
}

TEST_CASE_TEMPLATE("optim: every element of a large buffer is updated", T, float, double) {
  // The OpenMP split must cover [0, n) exactly once: an element skipped or
  // updated twice differs from the single-element result (the Adam t=1 and
  // SGD-momentum numbers above, element 0).
  const int64_t n = 100003;  // prime: no thread gets an even share
  const auto size = static_cast<size_t>(n);
  std::vector<T> p(size, T(1)), g(size, T(0.5)), m(size, T(0)), v(size, T(0));
  rz::adam_step_cpu(p.data(), g.data(), m.data(), v.data(), n, rz::AdamHyper{.lr = 0.1}, 1);
  std::vector<T> q(size, T(1)), buf(size, T(0));
  rz::sgd_step_cpu(q.data(), g.data(), buf.data(), n, rz::SgdHyper{.lr = 0.1, .momentum = 0.9},
                   true);
  int64_t bad = 0;
  for (size_t i = 0; i < size; ++i) {
    const bool ok = std::abs(static_cast<double>(p[i]) - 0.900000002) < 1e-6 &&
                    std::abs(static_cast<double>(q[i]) - 0.95) < 1e-6 &&
                    static_cast<double>(buf[i]) == 0.5;
    bad += ok ? 0 : 1;
  }
  CHECK(bad == 0);
}

TEST_CASE("optim: n == 0 touches nothing") {
  float p = 1.0f, g = 1.0f, m = 0.0f, v = 0.0f;
  rz::sgd_step_cpu<float>(&p, &g, nullptr, 0, rz::SgdHyper{.lr = 0.1}, true);
  rz::adam_step_cpu<float>(&p, &g, &m, &v, 0, rz::AdamHyper{.lr = 0.1}, 1);
  CHECK(p == 1.0f);
  CHECK(m == 0.0f);
  CHECK(v == 0.0f);
}
