// Finite-difference gradient checks in double precision. The scalar probed is
// L = sum(w * f(inputs)) with a fixed random w, so every output element
// contributes with a different weight; each checked input element is nudged
// by +-eps and dL/dx = (L(x+eps) - L(x-eps)) / 2eps is compared with the
// gradient autograd produced.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rz::test {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  int64_t max_elements = 96;  // per input: all if fewer, else an evenly spread subset
  uint64_t seed = 7;
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double weighted_sum(const Tensor& y, const Tensor& w) {
  const double* py = y.data<double>();
  const double* pw = w.data<double>();
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += py[i] * pw[i];
  return s;
}

// `inputs` are f64 CPU tensors; those with requires_grad are checked.
inline void gradcheck(const std::string& what, const OpFn& f, std::vector<Tensor> inputs,
                      GradcheckOptions opt = {}) {
  CAPTURE(what);
  Generator gen(opt.seed);
  Tensor y = f(inputs);
  REQUIRE(y.dtype() == DType::F64);
  const Tensor w = Tensor::uniform(y.shape(), -1.0, 1.0, gen, DType::F64);
  for (auto& t : inputs)
    if (t.defined() && t.requires_grad()) t.zero_grad();
  sum(mul(y, w)).backward();

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    CAPTURE(k);
    REQUIRE(x.grad().defined());
    const Tensor grad = x.grad().clone();
    const int64_t n = x.numel();
    const int64_t count = std::min(n, opt.max_elements);
    double* px = x.data<double>();
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = count == n ? j : j * (n - 1) / std::max<int64_t>(count - 1, 1);
      const double saved = px[i];
      double lp, lm;
      {
        NoGradGuard ng;
        px[i] = saved + opt.eps;
        lp = weighted_sum(f(inputs), w);
        px[i] = saved - opt.eps;
        lm = weighted_sum(f(inputs), w);
        px[i] = saved;
      }
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double analytic = grad.data<double>()[i];
      CAPTURE(i);
      CAPTURE(numeric);
      CAPTURE(analytic);
      CHECK(std::abs(numeric - analytic) <= opt.atol + opt.rtol * std::abs(numeric));
    }
  }
}

inline Tensor rand_f64(const Shape& s, Generator& gen, double lo = -1.0, double hi = 1.0,
                       bool requires_grad = true) {
  Tensor t = Tensor::uniform(s, lo, hi, gen, DType::F64);
  t.set_requires_grad(requires_grad);
  return t;
}

}  // namespace rz::test
