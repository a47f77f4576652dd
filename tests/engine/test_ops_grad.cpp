// Finite-difference gradient checks (f64) for every differentiable op, on
// random shapes with odd spatial sizes, stride 2, ceil-mode edges and batch 1.
#include <doctest/doctest.h>

#include <cmath>

#include "tests/engine/gradcheck.h"

using namespace rz;
using rz::test::gradcheck;
using rz::test::rand_f64;

TEST_CASE("grad: elementwise add, sub, mul, scale, sum, mean") {
  Generator gen(1);
  auto a = rand_f64({2, 3, 5}, gen), b = rand_f64({2, 3, 5}, gen);
  gradcheck("add", [](const auto& in) { return add(in[0], in[1]); }, {a, b});
  gradcheck("sub", [](const auto& in) { return sub(in[0], in[1]); }, {a, b});
  gradcheck("mul", [](const auto& in) { return mul(in[0], in[1]); }, {a, b});
  gradcheck("scale", [](const auto& in) { return scale(in[0], -2.5); }, {a});
  gradcheck("sum", [](const auto& in) { return sum(in[0]); }, {a});
  gradcheck("mean", [](const auto& in) { return mean(in[0]); }, {a});
  gradcheck("mul by itself", [](const auto& in) { return mul(in[0], in[0]); }, {a});
}

TEST_CASE("grad: relu and sigmoid") {
  Generator gen(2);
  // ReLU's kink at 0 is avoided: |x| >= 0.1 >> eps.
  Tensor x = Tensor::uniform({1, 5, 3, 4}, 0.1, 1.0, gen, DType::F64);
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); i += 2) p[i] = -p[i];
  x.set_requires_grad(true);
  gradcheck("relu", [](const auto& in) { return relu(in[0]); }, {x});
  gradcheck("sigmoid", [](const auto& in) { return sigmoid(in[0]); }, {rand_f64({3, 7}, gen, -6, 6)});
}

TEST_CASE("grad: reshape and flatten") {
  Generator gen(3);
  auto x = rand_f64({2, 3, 5, 4}, gen);
  gradcheck("reshape", [](const auto& in) { return reshape(in[0], {6, -1}); }, {x});
  gradcheck("flatten", [](const auto& in) { return flatten(in[0]); }, {x});
}

TEST_CASE("grad: conv2d over kernel sizes, strides, padding, batch 1 and odd sizes") {
  Generator gen(4);
  struct Case {
    int64_t N, H, W, C, K, k, stride, pad;
  };
  const Case cases[] = {
      {2, 5, 7, 3, 4, 3, 1, 1},   // 3x3 same padding, odd sizes
      {1, 7, 6, 2, 3, 3, 2, 1},   // 3x3 stride 2, batch 1
      {2, 4, 5, 5, 6, 1, 1, 0},   // 1x1 fast path
      {1, 5, 5, 4, 3, 1, 2, 0},   // 1x1 stride 2 (the plain-ResNet downsample)
      {1, 9, 8, 3, 2, 7, 2, 3},   // 7x7 stride 2 stem-like
      {2, 6, 5, 3, 2, 2, 2, 0},   // even kernel, no padding
      {1, 3, 3, 2, 2, 3, 1, 0},   // output 1x1
  };
  for (const auto& c : cases) {
    CAPTURE(c.H);
    CAPTURE(c.k);
    CAPTURE(c.stride);
    auto x = rand_f64({c.N, c.H, c.W, c.C}, gen);
    auto w = rand_f64({c.K, c.k, c.k, c.C}, gen);
    const Conv2dOptions opt{c.stride, c.pad};
    gradcheck("conv2d", [opt](const auto& in) { return conv2d(in[0], in[1], opt); }, {x, w});
  }
}

TEST_CASE("grad: batch_norm2d in training and eval mode") {
  Generator gen(5);
  for (bool training : {true, false}) {
    CAPTURE(training);
    auto x = rand_f64({2, 3, 5, 4}, gen, -2, 3);
    auto g = rand_f64({4}, gen, 0.5, 1.5), b = rand_f64({4}, gen);
    Tensor rm = Tensor::uniform({4}, -0.2, 0.2, gen, DType::F64);
    Tensor rv = Tensor::uniform({4}, 0.5, 1.5, gen, DType::F64);
    gradcheck("batch_norm2d",
              [=](const auto& in) {
                return batch_norm2d(in[0], in[1], in[2], rm, rv, {training, 0.1, 1e-5});
              },
              {x, g, b});
  }
  // batch 1, one pixel row: M = 1*1*3 values per channel
  auto x = rand_f64({1, 1, 3, 2}, gen);
  auto g = rand_f64({2}, gen, 0.5, 1.5), b = rand_f64({2}, gen);
  gradcheck("batch_norm2d small", [](const auto& in) {
    return batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), {true, 0.1, 1e-5});
  }, {x, g, b});
}

TEST_CASE("grad: channel_scale (squeeze-excitation multiply)") {
  Generator gen(6);
  auto x = rand_f64({2, 3, 5, 4}, gen), s = rand_f64({2, 4}, gen);
  gradcheck("channel_scale [N,C]", [](const auto& in) { return channel_scale(in[0], in[1]); }, {x, s});
  auto s4 = rand_f64({2, 1, 1, 4}, gen);
  gradcheck("channel_scale [N,1,1,C]", [](const auto& in) { return channel_scale(in[0], in[1]); },
            {x, s4});
}

TEST_CASE("grad: max_pool2d 3x3 stride 2 pad 1 with distinct values") {
  Generator gen(7);
  for (Shape shape : {Shape{2, 7, 6, 3}, Shape{1, 5, 5, 2}, Shape{1, 8, 9, 1}}) {
    CAPTURE(shape_str(shape));
    // A random permutation of well-separated values: no ties within a window.
    Tensor x = Tensor::empty(shape, DType::F64);
    const int64_t n = x.numel();
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm[static_cast<size_t>(i)], perm[gen.below(static_cast<uint64_t>(i + 1))]);
    for (int64_t i = 0; i < n; ++i) x.data<double>()[i] = 0.01 * static_cast<double>(perm[static_cast<size_t>(i)]);
    x.set_requires_grad(true);
    gradcheck("max_pool2d", [](const auto& in) { return max_pool2d(in[0], {3, 2, 1, false, true}); }, {x});
  }
}

TEST_CASE("grad: avg_pool2d 2x2 stride 2 ceil_mode, count_include_pad false (avg_down)") {
  Generator gen(8);
  for (Shape shape : {Shape{2, 5, 7, 3}, Shape{1, 4, 4, 2}, Shape{1, 3, 1, 2}}) {
    CAPTURE(shape_str(shape));
    auto x = rand_f64(shape, gen);
    gradcheck("avg_pool2d ceil", [](const auto& in) { return avg_pool2d(in[0], {2, 2, 0, true, false}); }, {x});
    gradcheck("avg_pool2d 3x3 pad", [](const auto& in) { return avg_pool2d(in[0], {3, 2, 1, true, true}); }, {x});
  }
}

TEST_CASE("grad: global_avg_pool, linear, flatten head") {
  Generator gen(9);
  auto x = rand_f64({3, 5, 3, 4}, gen);
  gradcheck("global_avg_pool", [](const auto& in) { return global_avg_pool(in[0]); }, {x});
  auto v = rand_f64({3, 7}, gen), w = rand_f64({5, 7}, gen), b = rand_f64({5}, gen);
  gradcheck("linear", [](const auto& in) { return linear(in[0], in[1], in[2]); }, {v, w, b});
  gradcheck("linear no bias", [](const auto& in) { return linear(in[0], in[1], Tensor()); }, {v, w});
  auto one = rand_f64({1, 7}, gen);
  gradcheck("linear batch 1", [](const auto& in) { return linear(in[0], in[1], in[2]); }, {one, w, b});
}

TEST_CASE("grad: bce_with_logits and mse_loss") {
  Generator gen(10);
  auto logits = rand_f64({4, 11}, gen, -8, 8);
  Tensor targets = Tensor::empty({4, 11}, DType::F64);
  for (int64_t i = 0; i < 44; ++i) targets.data<double>()[i] = static_cast<double>(gen.below(2));
  gradcheck("bce", [targets](const auto& in) { return bce_with_logits(in[0], targets); }, {logits});
  Tensor pw = Tensor::uniform({11}, 0.5, 4.0, gen, DType::F64);
  gradcheck("bce pos_weight", [targets, pw](const auto& in) { return bce_with_logits(in[0], targets, pw); },
            {logits});
  // soft targets are differentiable in PyTorch too, but we only need logits.
  auto a = rand_f64({2, 3, 3, 5}, gen), b = rand_f64({2, 3, 3, 5}, gen);
  gradcheck("mse", [](const auto& in) { return mse_loss(in[0], in[1]); }, {a, b});
}

TEST_CASE("grad: a small SE block composed of all the ops") {
  Generator gen(11);
  auto x = rand_f64({2, 5, 5, 3}, gen);
  auto w1 = rand_f64({4, 3, 3, 3}, gen), g1 = rand_f64({4}, gen, 0.5, 1.5), b1 = rand_f64({4}, gen);
  auto fc1 = rand_f64({2, 4}, gen), fb1 = rand_f64({2}, gen);
  auto fc2 = rand_f64({4, 2}, gen), fb2 = rand_f64({4}, gen);
  auto wd = rand_f64({4, 1, 1, 3}, gen);
  gradcheck("se block",
            [](const auto& in) {
              Tensor h = batch_norm2d(conv2d(in[0], in[1], {2, 1}), in[2], in[3], Tensor(), Tensor());
              Tensor s = global_avg_pool(h);
              s = sigmoid(linear(relu(linear(s, in[4], in[5])), in[6], in[7]));
              Tensor shortcut = conv2d(avg_pool2d(in[0], {2, 2, 0, true, false}), in[8]);
              return add(channel_scale(h, s), shortcut);
            },
            {x, w1, g1, b1, fc1, fb1, fc2, fb2, wd}, {.max_elements = 24});
}

TEST_CASE("grad: permute (layout changes)") {
  Generator gen(12);
  auto x = rand_f64({2, 3, 4, 5}, gen);
  gradcheck("permute nchw->nhwc", [](const auto& in) { return permute(in[0], {0, 2, 3, 1}); }, {x});
  gradcheck("permute 3120", [](const auto& in) { return permute(in[0], {3, 1, 2, 0}); }, {x});
}

TEST_CASE("grad: a wrong backward is caught by the finite-difference comparison") {
  // y = x^2 recorded with the factor 2 missing from its backward: the
  // analytic gradient x must differ from the central difference 2x.
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, -1.25, 2.0}, {3});
  x.set_requires_grad(true);
  auto wrong_square = [](const Tensor& in) {
    Tensor y = [&] {
      NoGradGuard ng;
      return mul(in, in);
    }();
    if (any_requires_grad({&in})) {
      SavedTensor s(in);
      record_op(y, "wrong_square", {&in},
                [s](const Tensor& g) { return std::vector<Tensor>{mul(g, s.get("wrong_square"))}; });
    }
    return y;
  };
  sum(wrong_square(x)).backward();
  const auto analytic = x.grad().to_vector<double>();
  const double eps = 1e-6;
  double* px = x.data<double>();
  for (int i = 0; i < 3; ++i) {
    const double saved = px[i];
    px[i] = saved + eps;
    const double lp = sum(mul(x, x)).item();
    px[i] = saved - eps;
    const double lm = sum(mul(x, x)).item();
    px[i] = saved;
    const double numeric = (lp - lm) / (2 * eps);
    CHECK(numeric == doctest::Approx(2 * saved).epsilon(1e-8));
    CHECK(std::abs(numeric - analytic[static_cast<size_t>(i)]) > 0.1);  // the harness would flag it
  }
}
