#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "kernels/cpu/optim.h"
#include "train/tiny_example.h"

using namespace rz;

namespace {
// A block with named submodules, the way the model zoo nests them.
struct Block : Module {
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1;
  Block(int64_t c, Generator& gen) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(c, c, 3, gen, 1, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(c));
  }
  Tensor forward(const Tensor& x) override { return relu(add((*bn1)(conv1->forward(x)), x)); }
};
}  // namespace

TEST_CASE("nn: recursive names, state dict order, train/eval") {
  Generator gen(1);
  Sequential layer1;
  layer1.push_back(std::make_shared<Block>(4, gen));
  layer1.push_back(std::make_shared<Block>(4, gen));
  std::vector<std::string> names;
  for (auto& [n, t] : layer1.state_dict()) names.push_back(n);
  const std::vector<std::string> expect = {
      "0.conv1.weight", "0.bn1.weight", "0.bn1.bias", "0.bn1.running_mean", "0.bn1.running_var",
      "0.bn1.num_batches_tracked", "1.conv1.weight", "1.bn1.weight", "1.bn1.bias",
      "1.bn1.running_mean", "1.bn1.running_var", "1.bn1.num_batches_tracked"};
  CHECK(names == expect);
  CHECK(layer1.named_parameters().size() == 6);
  CHECK(layer1.named_buffers().size() == 6);
  layer1.eval();
  for (auto& [n, c] : layer1.named_children()) CHECK_FALSE(c->is_training());
  layer1.train();
  CHECK(layer1.named_children()[1].second->is_training());
  CHECK(layer1.set_requires_grad("1.", false) == 3);
  CHECK_FALSE(layer1.named_parameters()[3].second.requires_grad());
  CHECK(layer1.named_parameters()[0].second.requires_grad());
}

TEST_CASE("nn: init follows timm/PyTorch") {
  Generator gen(2);
  Conv2d conv(64, 128, 3, gen);
  CHECK(conv.weight.shape() == Shape{128, 3, 3, 64});
  double s2 = 0;
  for (float v : conv.weight.to_vector<float>()) s2 += static_cast<double>(v) * v;
  const double std_measured = std::sqrt(s2 / static_cast<double>(conv.weight.numel()));
  CHECK(std_measured == doctest::Approx(std::sqrt(2.0 / (128 * 9))).epsilon(0.02));  // fan_out
  Linear fc(100, 11, gen);
  for (float v : fc.weight.to_vector<float>()) CHECK(std::abs(v) <= 0.1f);
  BatchNorm2d bn(5);
  CHECK(bn.weight.to_vector<float>() == std::vector<float>(5, 1.0f));
  CHECK(bn.running_var.to_vector<float>() == std::vector<float>(5, 1.0f));
}

TEST_CASE("nn: load_state_dict by name, strict and lenient") {
  Generator gen(3);
  Linear a(3, 2, gen), b(3, 2, gen);
  b.load_state_dict(a.state_dict());
  CHECK(b.weight.to_vector<float>() == a.weight.to_vector<float>());
  NamedTensors partial = {{"weight", a.weight}, {"extra", a.bias}};
  CHECK_THROWS_WITH_AS(b.load_state_dict(partial), doctest::Contains("missing 'bias'"), rz::Error);
  auto report = b.load_state_dict(partial, /*strict=*/false);
  CHECK(report.missing == std::vector<std::string>{"bias"});
  CHECK(report.unexpected == std::vector<std::string>{"extra"});
  NamedTensors wrong = {{"weight", Tensor::zeros({2, 4})}, {"bias", a.bias}};
  CHECK_THROWS_WITH_AS(b.load_state_dict(wrong), doctest::Contains("'weight' has shape [2, 4]"),
                       rz::Error);
}

TEST_CASE("nn: BatchNorm2d counts batches and switches statistics with the mode") {
  Generator gen(4);
  BatchNorm2d bn(3);
  Tensor x = Tensor::normal({4, 2, 2, 3}, 5.0, 2.0, gen);
  bn(x);
  bn(x);
  CHECK(bn.num_batches_tracked.item() == 2);
  bn.eval();
  Tensor before = bn.running_mean.clone();
  Tensor y = bn(x);
  CHECK(bn.running_mean.to_vector<float>() == before.to_vector<float>());
  CHECK(bn.num_batches_tracked.item() == 2);
  CHECK(y.shape() == x.shape());
}

TEST_CASE("nn: to(dtype) converts parameters in place and keeps them trainable") {
  Generator gen(5);
  Linear fc(4, 2, gen);
  Tensor handle = fc.weight;
  fc.to(DType::F64);
  CHECK(handle.dtype() == DType::F64);
  CHECK(fc.named_parameters()[0].second.dtype() == DType::F64);
  Tensor x = Tensor::ones({1, 4}, DType::F64);
  sum(fc(x)).backward();
  CHECK(fc.weight.grad().dtype() == DType::F64);
}

TEST_CASE("nn: optimizers drive parameters through the engine") {
  // One parameter p = 3 with loss p^2: gradient 2p. SGD lr 0.1: p <- 3 - 0.6 = 2.4.
  Tensor p = Tensor::from_vector(std::vector<float>{3.0f}, {1});
  p.set_requires_grad(true);
  Sgd sgd({p}, SgdHyper{.lr = 0.1});
  sum(mul(p, p)).backward();
  sgd.step();
  CHECK(p.item() == doctest::Approx(2.4));
  sgd.zero_grad();
  CHECK_FALSE(p.grad().defined());
  // Adam's first step moves by lr regardless of the gradient's scale.
  Tensor q = Tensor::from_vector(std::vector<float>{3.0f}, {1});
  q.set_requires_grad(true);
  Adam adam({q}, AdamHyper{.lr = 0.01});
  sum(scale(q, 1000.0)).backward();
  adam.step();
  CHECK(q.item() == doctest::Approx(2.99).epsilon(1e-6));
  CHECK(adam.step_count(0) == 1);
  CHECK(adam.state().size() == 3);  // exp_avg, exp_avg_sq, step
  // A parameter without a gradient is skipped.
  Tensor frozen = Tensor::ones({1});
  frozen.set_requires_grad(true);
  Adam adam2({frozen}, AdamHyper{.lr = 0.1});
  adam2.step();
  CHECK(frozen.item() == 1.0);
  CHECK(adam2.step_count(0) == 0);
}

TEST_CASE("nn: a tiny conv net with BN and an SE scale overfits a batch of 8") {
  Generator gen(2024);
  TinySeNet net(3, 8, 16, 8, 11, gen);
  Tensor x = Tensor::normal({8, 8, 8, 3}, 0, 1, gen);
  Tensor y = Tensor::empty({8, 11});
  for (int64_t i = 0; i < 88; ++i) y.data<float>()[i] = static_cast<float>(gen.below(2));
  Adam opt(net.parameters(), AdamHyper{.lr = 0.02});
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    Tensor loss = bce_with_logits(net(x), y);
    if (step == 0) first = loss.item();
    last = loss.item();
    loss.backward();
    opt.step();
    if (last < 0.02) break;
  }
  MESSAGE("tiny net BCE: first ", first, ", last ", last);
  CHECK(first > 0.5);
  CHECK(last < 0.05);
}

TEST_CASE("nn: optimizer state saved and restored continues identically") {
  for (const char* kind : {"sgd", "adamw"}) {
    CAPTURE(kind);
    auto make = [&](std::vector<Tensor> ps) -> std::unique_ptr<Optimizer> {
      if (std::string(kind) == "sgd")
        return std::make_unique<Sgd>(ps, SgdHyper{.lr = 0.1, .momentum = 0.9, .nesterov = true});
      return std::make_unique<Adam>(ps, AdamHyper{.lr = 0.01, .weight_decay = 0.1, .decoupled = true});
    };
    auto step = [](Optimizer& opt, Tensor& p) {
      opt.zero_grad();
      sum(mul(p, p)).backward();
      opt.step();
    };
    Tensor a = Tensor::from_vector(std::vector<float>{1.0f, -2.0f, 0.5f}, {3});
    a.set_requires_grad(true);
    auto opt_a = make({a});
    step(*opt_a, a);
    step(*opt_a, a);
    // Fork: copy parameter and optimizer state into a fresh optimizer.
    Tensor b = a.clone();
    b.set_requires_grad(true);
    auto opt_b = make({b});
    opt_b->load_state(opt_a->state());
    for (int i = 0; i < 3; ++i) {
      step(*opt_a, a);
      step(*opt_b, b);
    }
    CHECK(a.to_vector<float>() == b.to_vector<float>());
  }
}

TEST_CASE("nn: gradient clipping by global norm, as torch's clip_grad_norm_") {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  Tensor b = Tensor::from_vector(std::vector<double>{3}, {1});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  // loss = 3*a0 + 4*a1 + 12*b  ->  grads (3, 4) and (12): norm 13
  Tensor loss = add(sum(mul(a, Tensor::from_vector(std::vector<double>{3, 4}, {2}))), sum(scale(b, 12)));
  loss.backward();
  CHECK(clip_grad_norm({a, b}, 100.0) == doctest::Approx(13.0));
  CHECK(a.grad().to_vector<double>()[0] == doctest::Approx(3.0));  // under the limit: unchanged
  CHECK(clip_grad_norm({a, b}, 6.5) == doctest::Approx(13.0));
  const double coef = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad().to_vector<double>()[1] == doctest::Approx(4.0 * coef));
  CHECK(b.grad().item() == doctest::Approx(12.0 * coef));
}

TEST_CASE("nn: weight EMA follows the model") {
  Generator gen(3);
  BatchNorm2d model(2), ema(2);
  model.weight.fill_(3.0);
  model.running_mean.fill_(1.0);
  model.num_batches_tracked.fill_(7);
  ema_update(ema, model, 0.9);  // ema weight 1 -> 0.9*1 + 0.1*3 = 1.2
  CHECK(ema.weight.to_vector<float>()[0] == doctest::Approx(1.2));
  CHECK(ema.running_mean.to_vector<float>()[1] == doctest::Approx(0.1));
  CHECK(ema.num_batches_tracked.item() == 7);
  BatchNorm2d other(3);
  CHECK_THROWS_AS(ema_update(other, model, 0.9), Error);
  // The gate belongs to CUDA graph mode.
  CHECK_THROWS_WITH_AS(ema_update(ema, model, 0.9, Tensor::zeros({})), doctest::Contains("graph mode"),
                       Error);
  // Double EMAs blend in double: 0.5 * 0.25 + 0.5 * 0.75 = 0.5 exactly.
  std::vector<double> e{0.25, 1.0}, v{0.75, 3.0};
  ema_blend_cpu(e.data(), v.data(), 2, 0.5);
  CHECK(e == std::vector<double>{0.5, 2.0});
}
