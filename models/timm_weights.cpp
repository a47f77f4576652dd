#include "models/timm_weights.h"

#include <map>

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

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

TimmLoadReport load_timm_state_dict(Module& model, const NamedTensors& state, bool strict) {
  TimmLoadReport report;
  std::map<std::string, Tensor> given;
  for (const auto& [name, t] : state) {
    RZ_CHECK(given.emplace(name, t).second, "state dict has '", name, "' twice");
  }
  const NamedTensors mine = model.state_dict();
  const std::string first_conv = mine.empty() ? "" : mine.front().first;
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
    if (src.dim() == 4) src = oihw_to_krsc(src);
    if (name.rfind("fc.", 0) == 0 && src.shape() != dst.shape()) {
      report.dropped.push_back(name);  // a different classifier: keep our init
      continue;
    }
    if (name == first_conv && src.dim() == 4 && dst.dim() == 4 && src.size(3) == 3 &&
        dst.size(3) == 1 && src.size(0) == dst.size(0)) {
      // RGB weights for a gray model: the response to a gray image replicated
      // into three channels is the sum over the input channels.
      Tensor f = src.to(DType::F64);
      Tensor g = Tensor::zeros({f.size(0), f.size(1), f.size(2), 1}, DType::F64);
      const double* pf = f.data<double>();
      double* pg = g.data<double>();
      for (int64_t i = 0; i < g.numel(); ++i) pg[i] = pf[3 * i] + pf[3 * i + 1] + pf[3 * i + 2];
      src = g;
      report.adapted.push_back(name);
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
