// Pretrained weights as timm loads them. tools/make_pretrained_fixtures.py
// wrote a 1000-class, RGB seresnet152d-structured model (narrow widths) the
// way timm publishes model.safetensors, and what timm's own
// create_model("seresnet152d", pretrained=True, in_chans=c, num_classes=11)
// made of that file: the adapted first conv, the new head, and eval logits.
// We load the same file through model.pretrained's path (load_pretrained)
// and must get timm's adapted weights and, with timm's head copied in,
// timm's logits.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "tests/data/temp_dir.h"
#include "train/checkpoint.h"

using namespace rz;
using rz::test::contains;

namespace {

const std::string kDir = std::string(RZ_FIXTURES_DIR) + "/pretrained/";
const std::string kPublished = kDir + "seresnet152d_narrow_in1k.safetensors";

std::map<std::string, Tensor> adapted_fixture() {
  const auto file = load_safetensors(kDir + "seresnet152d_narrow_adapted.safetensors");
  return {file.tensors.begin(), file.tensors.end()};
}

// seresnet152d at the fixture's narrow widths.
ResNetConfig narrow_config(int64_t in_chans, int64_t num_classes) {
  const auto file = load_safetensors(kDir + "seresnet152d_narrow_adapted.safetensors");
  const auto j = nlohmann::json::parse(file.metadata.at("config"));
  ResNetConfig cfg = resnet_config("seresnet152d");
  for (size_t i = 0; i < 4; ++i) cfg.channels[i] = j.at("channels")[i];
  cfg.stem_width = j.at("stem_width");
  cfg.in_chans = in_chans;
  cfg.num_classes = num_classes;
  return cfg;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto x = a.to(DType::F64).to_vector<double>();
  const auto y = b.to(DType::F64).to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  return worst;
}

Tensor param(const Module& m, const std::string& name) {
  for (const auto& [n, t] : m.state_dict())
    if (n == name) return t;
  FAIL("no parameter " << name);
  return {};
}

}  // namespace

TEST_CASE("pretrained: timm's file loads as timm's create_model loads it, for in_chans 1, 2, 3, 4 and 11 classes") {
  const auto want = adapted_fixture();
  for (const int64_t c : {1, 2, 3, 4}) {
    CAPTURE(c);
    const std::string p = "in" + std::to_string(c) + ".";
    auto model = create_resnet(narrow_config(c, 11), 7);
    const Tensor head_before = param(*model, "fc.weight").clone();
    const TimmLoadReport report = load_pretrained(*model, kPublished);

    // The report says what was adapted and what was replaced.
    CHECK(report.missing.empty());
    CHECK(report.unexpected.empty());
    CHECK(report.dropped == std::vector<std::string>{"fc.weight", "fc.bias"});
    if (c == 3) CHECK(report.adapted.empty());
    else CHECK(report.adapted == std::vector<std::string>{"conv1.0.weight"});
    CHECK(contains(report.str(), "fc.weight, fc.bias dropped"));

    // The first conv is timm's adapted weight, to the bit; the head is the model's own new init.
    const Tensor conv1 = krsc_to_oihw(param(*model, "conv1.0.weight"));
    CHECK(max_abs_diff(conv1, want.at(p + "conv1.0.weight")) == 0.0);
    CHECK(max_abs_diff(param(*model, "fc.weight"), head_before) == 0.0);

    // With timm's random head copied in, the logits are timm's (computed in fp64 there).
    {
      NoGradGuard no_grad;
      param(*model, "fc.weight").copy_(want.at(p + "fc.weight"));
      param(*model, "fc.bias").copy_(want.at(p + "fc.bias"));
    }
    model->eval();
    NoGradGuard no_grad;
    const Tensor x = permute(want.at(p + "input"), {0, 2, 3, 1});  // NCHW -> NHWC
    const Tensor logits = model->forward(x);
    const Tensor& ref = want.at(p + "logits");
    const double diff = max_abs_diff(logits, ref);
    INFO("max |ours - timm| = ", diff);
    CHECK(diff < 1e-4);
    // The adapted conv matters: the logits are not those of another channel rule.
    if (c != 3) {
      auto plain = create_resnet(narrow_config(c, 11), 7);
      load_pretrained(*plain, kPublished);
      Tensor w = param(*plain, "conv1.0.weight");
      w.copy_(scale(w, 2.0));
      param(*plain, "fc.weight").copy_(want.at(p + "fc.weight"));
      param(*plain, "fc.bias").copy_(want.at(p + "fc.bias"));
      plain->eval();
      CHECK(max_abs_diff(plain->forward(x), ref) > 1e-3);
    }
  }
}

TEST_CASE("pretrained: adapt_input_conv follows timm's rule and refuses what timm refuses") {
  // OIHW [2, 3, 1, 2]: output o, channel c, tap p holds 100 o + 10 c + p + 1.
  Tensor w = Tensor::zeros({2, 3, 1, 2}, DType::F32);
  for (int o = 0; o < 2; ++o)
    for (int ch = 0; ch < 3; ++ch)
      for (int p = 0; p < 2; ++p) w.data<float>()[(o * 3 + ch) * 2 + p] = static_cast<float>(100 * o + 10 * ch + p + 1);
  // One channel: the sum over RGB.
  const auto gray = adapt_input_conv(1, w).to_vector<float>();
  CHECK(gray == std::vector<float>{33, 36, 333, 336});
  // Five channels: R G B R G, each times 3/5.
  const auto five = adapt_input_conv(5, w).to_vector<float>();
  REQUIRE(five.size() == 20);
  const float s = static_cast<float>(3.0 / 5.0);
  for (int o = 0; o < 2; ++o)
    for (int ch = 0; ch < 5; ++ch)
      for (int p = 0; p < 2; ++p)
        CHECK(five[(o * 5 + ch) * 2 + p] == static_cast<float>(100 * o + 10 * (ch % 3) + p + 1) * s);
  // Three channels: unchanged.
  CHECK(adapt_input_conv(3, w).to_vector<float>() == w.to_vector<float>());
  // Only RGB weights adapt; the error names the weight.
  const Tensor two = Tensor::zeros({2, 2, 1, 1}, DType::F32);
  CHECK_THROWS_WITH_AS(adapt_input_conv(1, two, "conv1.weight"),
                       doctest::Contains("'conv1.weight' has 2 input channels in the file and 1"), Error);
  CHECK_THROWS_AS(adapt_input_conv(0, w), Error);
}

TEST_CASE("pretrained: a file that does not fit the model is an error naming the file and the weight") {
  // Another architecture: seresnet152d weights for a seresnet_tiny.
  auto tiny = create_resnet(resnet_config("seresnet_tiny"), 1);
  CHECK_THROWS_WITH_AS(load_pretrained(*tiny, kPublished), doctest::Contains(kPublished.c_str()), Error);
  // A file missing a weight the model has.
  const auto file = load_safetensors(kPublished);
  NamedTensors partial;
  for (const auto& [k, v] : file.tensors)
    if (k != "layer4.2.bn3.running_var") partial.emplace_back(k, v);
  const rz::test::TempDir dir("pretrained");
  const std::string path = (dir.path() / "partial.safetensors").string();
  save_safetensors(path, partial);
  auto model = create_resnet(narrow_config(3, 11), 1);
  CHECK_THROWS_WITH_AS(load_pretrained(*model, path), doctest::Contains("missing 'layer4.2.bn3.running_var'"),
                       Error);
  // Timm's own file for the tiny structure loads, head replaced.
  auto ok = create_resnet([] {
    auto cfg = resnet_config("seresnet_tiny");
    cfg.num_classes = 11;
    cfg.in_chans = 1;
    return cfg;
  }(), 1);
  const auto rep = load_pretrained(*ok, kDir + "seresnet_tiny_in1k.safetensors");
  CHECK(rep.adapted.size() == 1);
  CHECK(rep.dropped.size() == 2);
}
