// The student-kd loss of one training step against the formula, computed here
// from the models' stage outputs in double: BCE(logits, y) * w_bce +
// w_feat * mean over stage.feat_layers of mean((student - teacher)^2).
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/optim.h"
#include "engine/tensor.h"
#include "models/seresnet.h"
#include "train/compute.h"
#include "train/config.h"
#include "train/train_step.h"

using namespace rz;

namespace {

double mse(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  REQUIRE(x.size() == y.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return s / static_cast<double>(x.size());
}

double bce(const Tensor& logits, const Tensor& y) {
  const auto z = logits.to_vector<float>(), t = y.to_vector<float>();
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    const double v = z[i];
    s += std::max(v, 0.0) - v * t[i] + std::log1p(std::exp(-std::abs(v)));
  }
  return s / static_cast<double>(z.size());
}

}  // namespace

TEST_CASE("train step: the distillation loss is BCE plus the mean feature MSE over stage.feat_layers") {
  ResNetConfig mc = resnet_config("seresnet_tiny");
  mc.num_classes = 11;
  Generator gen(3);
  const Tensor x = Tensor::normal({4, 64, 64, 3}, 0, 1, gen);
  const Tensor xt = Tensor::normal({4, 64, 64, 3}, 0, 1, gen);
  Tensor y = Tensor::zeros({4, 11});
  for (int64_t i = 0; i < 4; ++i) y.data<float>()[i * 11 + (i * 3) % 11] = 1.f;
  const Compute compute = resolve_compute("cpu", "fp32");

  for (const std::vector<std::string>& layers :
       {std::vector<std::string>{"layer4"}, {"layer2", "layer4"}, {"layer1", "layer2", "layer3", "layer4"},
        {"layer3"}}) {
    CAPTURE(layers.size());
    CAPTURE(layers.front());
    TrainConfig cfg;
    cfg.stage.kind = "student-kd";
    cfg.stage.teacher = "unused.ckpt";
    cfg.stage.feat_layers = layers;
    cfg.stage.w_bce = 0.7;
    cfg.stage.w_feat = 1.3;
    validate_config(cfg);
    auto student = create_resnet(mc, 11), teacher = create_resnet(mc, 12);
    teacher->eval();
    // The reference, before the step changes anything: the student in training mode
    // (batch statistics, as in the step), the teacher in eval mode.
    double want_feat = 0, want_bce = 0;
    {
      NoGradGuard ng;
      const auto s = student->forward_stages(x);
      const auto t = teacher->forward_stages(xt);
      REQUIRE(s.size() == 4);
      CHECK(s.back().shape() == student->forward_features(x).shape());
      for (const auto& name : layers) {
        const size_t i = static_cast<size_t>(name.back() - '1');
        want_feat += mse(s[i], t[i]);
      }
      want_feat /= static_cast<double>(layers.size());
      want_bce = bce(student->forward_head(s.back()), y);
    }
    auto params = student->parameters();
    Sgd optim(params, SgdHyper{.lr = 0.0});
    TrainStep step(cfg, compute, *student, teacher.get(), nullptr, optim, params, {});
    const StepResult r = step.run(x, xt, y, 0.0, true);
    REQUIRE(r.finite);
    CHECK(r.feat == doctest::Approx(want_feat).epsilon(1e-5));
    CHECK(r.loss == doctest::Approx(0.7 * want_bce + 1.3 * want_feat).epsilon(1e-5));
  }
}

TEST_CASE("train step: stage.feat_layers is checked") {
  TrainConfig c;
  apply_override(c, "stage.feat_layers=layer1,layer3");
  CHECK(c.stage.feat_layers == std::vector<std::string>{"layer1", "layer3"});
  validate_config(c);
  c.stage.feat_layers = {"layer5"};
  CHECK_THROWS_WITH_AS(validate_config(c), doctest::Contains("stage.feat_layers = 'layer5'"), Error);
  c.stage.feat_layers = {"layer2", "layer2"};
  CHECK_THROWS_WITH_AS(validate_config(c), doctest::Contains("'layer2' twice"), Error);
  c.stage.feat_layers = {};
  CHECK_THROWS_WITH_AS(validate_config(c), doctest::Contains("stage.feat_layers is empty"), Error);
  ResNetConfig mc = resnet_config("seresnet_tiny");
  auto m = create_resnet(mc, 1);
  Generator gen(2);
  const auto two = m->forward_stages(Tensor::normal({1, 64, 64, 3}, 0, 1, gen), 2);
  REQUIRE(two.size() == 2);
  CHECK(two[1].shape() == Shape{1, 8, 8, 64});  // stride 8, 16 planes x 4
  CHECK_THROWS_AS(m->forward_stages(Tensor::normal({1, 64, 64, 3}, 0, 1, gen), 5), Error);
}
