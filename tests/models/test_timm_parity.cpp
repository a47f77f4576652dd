// Parity with timm: fixtures written by tools/make_timm_fixtures.py hold a
// timm model's random weights, a fixed input, and what timm computed from
// them in one training-mode step (logits, features, every parameter
// gradient of a BCE loss, the BN running statistics afterwards). We load the
// same weights through the timm-layout path and must reproduce all of it in
// fp32 on the CPU.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"

using namespace rz;

namespace {
struct Mismatch {
  double worst = 0;  // max |a - b| / (atol + rtol |b|); <= 1 passes
  int64_t index = -1;
};

// Elementwise |ours - ref| <= rtol * (|ref| + max|ref| * 1e-2): relative, with a
// floor at 1% of the tensor's largest magnitude for entries near zero.
Mismatch compare(const Tensor& ours, const Tensor& ref, double rtol) {
  REQUIRE(ours.shape() == ref.shape());
  const auto a = ours.to(DType::F64).to_vector<double>();
  const auto b = ref.to(DType::F64).to_vector<double>();
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::abs(v));
  Mismatch m;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = std::abs(a[i] - b[i]) / (rtol * (std::abs(b[i]) + 1e-2 * scale) + 1e-30);
    if (!(r <= m.worst)) {
      m.worst = r;
      m.index = static_cast<int64_t>(i);
    }
  }
  return m;
}

// dtype F64: our fp64 path against timm's fp64 computation (the fixture's
// weights and input are fp32-representable, so only the stored outputs'
// fp32 rounding separates the two); F32: the production precision.
void check_parity(const std::string& name, DType dtype, double rtol_out, double rtol_grad) {
  CAPTURE(name);
  const std::string dtype_str = dtype_name(dtype);
  CAPTURE(dtype_str);
  const auto file = load_safetensors(std::string(RZ_FIXTURES_DIR) + "/timm/" + name + ".safetensors");
  std::map<std::string, Tensor> t;
  NamedTensors state;
  for (const auto& [k, v] : file.tensors) {
    t[k] = v;
    const bool result = k == "input" || k == "targets" || k == "features" || k == "logits" ||
                        k == "loss" || k.starts_with("grad.") || k.starts_with("after.");
    if (!result) state.emplace_back(k, v);
  }
  const auto j = nlohmann::json::parse(file.metadata.at("config"));
  ResNetConfig cfg;
  cfg.name = j.at("name");
  cfg.bottleneck = j.at("bottleneck");
  for (size_t i = 0; i < 4; ++i) {
    cfg.layers[i] = j.at("layers")[i];
    cfg.channels[i] = j.at("channels")[i];
  }
  cfg.deep_stem = j.at("deep_stem");
  cfg.stem_width = j.at("stem_width");
  cfg.avg_down = j.at("avg_down");
  cfg.se = j.at("se");
  cfg.in_chans = j.at("in_chans");
  cfg.num_classes = j.at("num_classes");

  auto model = create_resnet(cfg, 0);
  const auto report = load_timm_state_dict(*model, state);  // strict: every name must match
  CHECK(report.dropped.empty());
  model->to(dtype);
  model->train();
  Tensor x = permute(t.at("input"), {0, 2, 3, 1}).to(dtype);  // NCHW -> NHWC
  Tensor features = model->forward_features(x);
  Tensor logits = model->forward_head(features);
  Tensor loss = bce_with_logits(logits, t.at("targets").to(dtype));
  loss.backward();

  CHECK(loss.item() == doctest::Approx(t.at("loss").item()).epsilon(1e-5));
  {
    const auto m = compare(logits, t.at("logits"), rtol_out);
    INFO("logits worst ratio ", m.worst, " at ", m.index);
    CHECK(m.worst <= 1.0);
  }
  {
    const auto m = compare(permute(features.detach(), {0, 3, 1, 2}), t.at("features"), rtol_out);
    INFO("features worst ratio ", m.worst, " at ", m.index);
    CHECK(m.worst <= 1.0);
  }
  int64_t grads_checked = 0;
  for (const auto& [pname, p] : model->named_parameters()) {
    CAPTURE(pname);
    REQUIRE(p.grad().defined());
    Tensor g = p.grad().dim() == 4 ? krsc_to_oihw(p.grad()) : p.grad();
    const auto m = compare(g, t.at("grad." + pname), rtol_grad);
    INFO("gradient worst ratio ", m.worst, " at ", m.index);
    CHECK(m.worst <= 1.0);
    ++grads_checked;
  }
  int64_t stats_checked = 0;
  for (const auto& [bname, b] : model->named_buffers()) {
    if (!bname.ends_with("running_mean") && !bname.ends_with("running_var")) continue;
    CAPTURE(bname);
    const auto m = compare(b, t.at("after." + bname), rtol_out);
    CHECK(m.worst <= 1.0);
    ++stats_checked;
  }
  MESSAGE(name, " (", std::string(dtype_name(dtype)), "): ", grads_checked, " gradients and ", stats_checked,
          " BN statistics match timm; loss ", loss.item());
  CHECK(grads_checked > 0);
  CHECK(stats_checked > 0);
}
}  // namespace

TEST_CASE("timm parity: exact in fp64") {
  for (const char* name :
       {"seresnet_tiny", "seresnet_tiny_basic", "seresnet18_narrow", "seresnet152d_narrow"})
    check_parity(name, DType::F64, 1e-6, 1e-6);
}

TEST_CASE("timm parity: fp32 (logits rtol 1e-4, gradients rtol 1e-3)") {
  for (const char* name :
       {"seresnet_tiny", "seresnet_tiny_basic", "seresnet18_narrow", "seresnet152d_narrow"})
    check_parity(name, DType::F32, 1e-4, 1e-3);
}

TEST_CASE("timm parity: a timm safetensors file round-trips through the model byte for byte") {
  const std::string src = std::string(RZ_FIXTURES_DIR) + "/timm/seresnet152d_narrow.safetensors";
  const auto file = load_safetensors(src);
  NamedTensors state;
  for (const auto& [k, v] : file.tensors) {
    const bool result = k == "input" || k == "targets" || k == "features" || k == "logits" ||
                        k == "loss" || k.starts_with("grad.") || k.starts_with("after.");
    if (!result) state.emplace_back(k, v);
  }
  const auto j = nlohmann::json::parse(file.metadata.at("config"));
  ResNetConfig cfg = resnet_config("seresnet152d");
  for (size_t i = 0; i < 4; ++i) cfg.channels[i] = j.at("channels")[i];
  cfg.stem_width = j.at("stem_width");
  cfg.num_classes = j.at("num_classes");
  auto model = create_resnet(cfg, 0);
  load_timm_state_dict(*model, state);
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("rz_roundtrip_" + std::to_string(::getpid()) + ".safetensors"))
                              .string();
  save_safetensors(out, timm_state_dict(*model));
  const auto back = load_safetensors(out);
  std::filesystem::remove(out);
  std::map<std::string, Tensor> saved(back.tensors.begin(), back.tensors.end());
  REQUIRE(saved.size() == state.size());
  for (const auto& [name, original] : state) {
    CAPTURE(name);
    REQUIRE(saved.count(name) == 1);
    const Tensor& t = saved.at(name);
    REQUIRE(t.shape() == original.shape());
    REQUIRE(t.dtype() == original.dtype());
    CHECK(std::memcmp(t.raw_data(), original.raw_data(), t.nbytes()) == 0);
  }
}
