#include <doctest/doctest.h>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace rz;

namespace {
Tensor leaf(std::vector<double> v) {
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST_CASE("autograd: a tensor feeding two consumers sums both gradients") {
  Tensor x = leaf({1.0, -2.0, 3.0});
  // y = sum(x*x + 3x)  =>  dy/dx = 2x + 3
  Tensor y = sum(add(mul(x, x), scale(x, 3.0)));
  y.backward();
  const auto g = x.grad().to_vector<double>();
  CHECK(g[0] == doctest::Approx(5.0));
  CHECK(g[1] == doctest::Approx(-1.0));
  CHECK(g[2] == doctest::Approx(9.0));
}

TEST_CASE("autograd: residual connection h = relu(x) + x") {
  Tensor x = leaf({-1.5, 0.5, 2.0});
  Tensor y = sum(add(relu(x), x));
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1.0, 2.0, 2.0});
}

TEST_CASE("autograd: gradients accumulate over backward calls until zeroed") {
  Tensor x = leaf({2.0});
  sum(scale(x, 4.0)).backward();
  sum(scale(x, 4.0)).backward();
  CHECK(x.grad().item() == doctest::Approx(8.0));
  x.zero_grad();
  sum(scale(x, 4.0)).backward();
  CHECK(x.grad().item() == doctest::Approx(4.0));
}

TEST_CASE("autograd: NoGradGuard records nothing and restores the mode") {
  Tensor x = leaf({1.0, 2.0});
  {
    NoGradGuard guard;
    CHECK_FALSE(grad_enabled());
    Tensor y = mul(x, x);
    CHECK(y.grad_fn() == nullptr);
    CHECK_FALSE(y.requires_grad());
    {
      NoGradGuard nested;
    }
    CHECK_FALSE(grad_enabled());
  }
  CHECK(grad_enabled());
  CHECK(mul(x, x).grad_fn() != nullptr);
}

TEST_CASE("autograd: inputs that do not require grad get none") {
  Tensor x = leaf({1.0, 2.0});
  Tensor c = Tensor::from_vector(std::vector<double>{3.0, 4.0}, {2});
  sum(mul(x, c)).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3.0, 4.0});
  CHECK_FALSE(c.grad().defined());
}

TEST_CASE("autograd: a second backward through a freed graph is a clear error") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = sum(mul(x, x));
  y.backward();
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("second time"), rz::Error);
}

TEST_CASE("autograd: retain_graph keeps saved tensors for another backward") {
  Tensor x = leaf({3.0});
  Tensor y = sum(mul(x, x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  CHECK(x.grad().item() == doctest::Approx(12.0));
}

TEST_CASE("autograd: saved tensors are freed after backward") {
  Tensor x = leaf({1.0, 2.0, 3.0});
  std::weak_ptr<Storage> activation;
  Tensor loss;
  {
    Tensor h = relu(x);  // relu saves its output
    activation = h.impl_ptr()->storage;
    loss = sum(mul(h, h));
  }
  CHECK_FALSE(activation.expired());  // the graph keeps it alive
  loss.backward();
  CHECK(activation.expired());
}

TEST_CASE("autograd: modifying a saved tensor in place is detected") {
  Tensor x = leaf({1.0, 2.0});
  Tensor h = relu(x);
  Tensor y = sum(mul(h, h));
  h.mul_(2.0);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("modified in place"), rz::Error);
}

TEST_CASE("autograd: misuse errors") {
  Tensor x = leaf({1.0, 2.0});
  Tensor y = mul(x, x);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("one-element"), rz::Error);
  CHECK_THROWS_WITH_AS(y.set_requires_grad(true), doctest::Contains("non-leaf"), rz::Error);
  Tensor c = Tensor::ones({1});
  CHECK_THROWS_WITH_AS(c.backward(), doctest::Contains("does not require grad"), rz::Error);
  // explicit output gradient for a non-scalar root
  y.backward(Tensor::from_vector(std::vector<double>{1.0, 10.0}, {2}));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2.0, 40.0});
}

TEST_CASE("autograd: a long chain runs without deep recursion") {
  Tensor x = leaf({1.0});
  Tensor h = x;
  for (int i = 0; i < 20000; ++i) h = scale(h, 1.0);
  sum(h).backward();
  CHECK(x.grad().item() == doctest::Approx(1.0));
}
