#include "models/timm_weights.h"

#include <map>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace rz {

Tensor oihw_to_krsc(const Tensor& w) {
  RZ_CHECK(w.dim() == 4, "expected a 4-D conv weight, got ", w.str());
  NoGradGuard no_grad;
  return permute(w.to(Device::cpu()), {0, 2, 3, 1});
}

Tensor krsc_to_oihw(const Tensor& w) {
  RZ_CHECK(w.dim() == 4, "expected a 4-D conv weight, got ", w.str());
  NoGradGuard no_grad;
  return permute(w.to(Device::cpu()), {0, 3, 1, 2});
}

Tensor adapt_input_conv(int64_t in_chans, const Tensor& weight, const std::string& name) {
  RZ_CHECK(weight.dim() == 4, "'", name, "': expected a 4-D OIHW conv weight, got ", weight.str());
  RZ_CHECK(in_chans >= 1, "'", name, "': cannot adapt to ", in_chans, " input channels");
  const int64_t O = weight.size(0), I = weight.size(1), J = weight.size(2), K = weight.size(3);
  if (I == in_chans) return weight;
  RZ_CHECK(I == 3, "'", name, "' has ", I, " input channels in the file and ", in_chans,
           " in the model: pretrained first convs are adapted only from 3 (RGB) channels, as timm does");
  NoGradGuard no_grad;
  // fp32 arithmetic in timm's order, so the adapted values are timm's to the bit.
  const std::vector<float> w = weight.to(Device::cpu()).to(DType::F32).to_vector<float>();
  Tensor out = Tensor::zeros({O, in_chans, J, K}, DType::F32);
  float* po = out.data<float>();
  const int64_t hw = J * K;
  for (int64_t o = 0; o < O; ++o) {
    const float* src = w.data() + o * I * hw;
    float* dst = po + o * in_chans * hw;
    if (in_chans == 1) {
      for (int64_t p = 0; p < hw; ++p) dst[p] = (src[p] + src[hw + p]) + src[2 * hw + p];
    } else {
      // Channel c repeats RGB channel c mod 3, all scaled by 3 / in_chans.
      const float scale = static_cast<float>(3.0 / static_cast<double>(in_chans));
      for (int64_t c = 0; c < in_chans; ++c)
        for (int64_t p = 0; p < hw; ++p) dst[c * hw + p] = src[(c % 3) * hw + p] * scale;
    }
  }
  return out.to(weight.dtype());
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string TimmLoadReport::str() const {
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : "; ") + part; };
  if (!adapted.empty()) add(join(adapted) + " adapted to the model's input channels (timm's rule)");
  if (!dropped.empty()) add(join(dropped) + " dropped: the file's classifier has another class count (new head)");
  if (!missing.empty()) add(std::to_string(missing.size()) + " missing (" + join(missing) + ")");
  if (!unexpected.empty()) add(std::to_string(unexpected.size()) + " unexpected (" + join(unexpected) + ")");
  return s.empty() ? "every weight loaded as is" : s;
}

TimmLoadReport load_timm_state_dict(Module& model, const NamedTensors& state, bool strict) {
  TimmLoadReport report;
  std::map<std::string, Tensor> given;
  for (const auto& [name, t] : state) {
    RZ_CHECK(given.emplace(name, t).second, "state dict has '", name, "' twice");
  }
  const NamedTensors mine = model.state_dict();
  std::string first_conv;  // the stem's conv: the first 4-D weight (conv1.weight, conv1.0.weight)
  for (const auto& [name, t] : mine) {
    if (t.dim() == 4) {
      first_conv = name;
      break;
    }
  }
  std::map<std::string, bool> used;
  NoGradGuard no_grad;
  for (const auto& [name, dst_const] : mine) {
    Tensor dst = dst_const;
    auto it = given.find(name);
    if (it == given.end()) {
      if (!ends_with(name, "num_batches_tracked")) report.missing.push_back(name);
      continue;
    }
    used[name] = true;
    Tensor src = it->second.to(Device::cpu());
    if (name == first_conv && src.dim() == 4 && src.size(1) != dst.size(3)) {
      src = adapt_input_conv(dst.size(3), src, name);
      report.adapted.push_back(name);
    }
    if (src.dim() == 4) src = oihw_to_krsc(src);
    if (name.rfind("fc.", 0) == 0 && src.shape() != dst.shape()) {
      report.dropped.push_back(name);  // a different classifier: keep our init
      continue;
    }
    RZ_CHECK(src.shape() == dst.shape(), "weight '", name, "' has shape ", shape_str(src.shape()),
             " (KRSC) in the file but ", shape_str(dst.shape()), " in the model");
    dst.copy_(src);
  }
  for (const auto& [name, t] : given)
    if (!used.count(name)) report.unexpected.push_back(name);
  if (strict && (!report.missing.empty() || !report.unexpected.empty())) {
    std::string msg = "loading timm weights:";
    const size_t show = 8;
    for (size_t i = 0; i < std::min(show, report.missing.size()); ++i)
      msg += " missing '" + report.missing[i] + "'";
    if (report.missing.size() > show) msg += " (" + std::to_string(report.missing.size()) + " missing in all)";
    for (size_t i = 0; i < std::min(show, report.unexpected.size()); ++i)
      msg += " unexpected '" + report.unexpected[i] + "'";
    if (report.unexpected.size() > show)
      msg += " (" + std::to_string(report.unexpected.size()) + " unexpected in all)";
    RZ_THROW(msg);
  }
  return report;
}

NamedTensors timm_state_dict(const Module& model) {
  NamedTensors out;
  NoGradGuard no_grad;
  for (const auto& [name, t] : model.state_dict()) {
    Tensor host = t.to(Device::cpu());
    if (host.dim() == 4) host = krsc_to_oihw(host);
    else host = host.clone();
    if (is_floating(host.dtype())) host = host.to(DType::F32);
    out.emplace_back(name, host);
  }
  return out;
}

}  // namespace rz
