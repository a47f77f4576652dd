#include "engine/module.h"

#include <map>
#include <set>

#include "engine/autograd.h"
#include "engine/cuda_context.h"

namespace rz {

Tensor Module::operator()(const Tensor& x) {
  NvtxRange range(type_name());
  return forward(x);
}

Tensor Module::forward(const Tensor&) {
  RZ_THROW(type_name(), " has no single-input forward");
}

Tensor Module::register_parameter(std::string name, Tensor t) {
  RZ_CHECK(t.defined() && is_floating(t.dtype()), "parameter '", name, "' must be a floating tensor");
  t.set_requires_grad(true);
  params_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  RZ_CHECK(t.defined(), "buffer '", name, "' is undefined");
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::add_child(std::string name, std::shared_ptr<Module> m) {
  RZ_CHECK(m != nullptr, "child module '", name, "' is null");
  m->train(training_);
  children_.emplace_back(std::move(name), std::move(m));
}

void Module::collect(const std::string& prefix, bool params, bool buffers,
                     NamedTensors& out) const {
  if (params)
    for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, false, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, out);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", true, true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

Module::LoadReport Module::load_state_dict(const NamedTensors& state, bool strict) {
  LoadReport report;
  NamedTensors mine = state_dict();
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : state) given.emplace(n, &t);
  std::set<std::string> own;
  NoGradGuard no_grad;
  for (auto& [name, dst] : mine) {
    own.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      report.missing.push_back(name);
      continue;
    }
    const Tensor& src = *it->second;
    RZ_CHECK(src.shape() == dst.shape(), "load_state_dict: '", name, "' has shape ",
             shape_str(src.shape()), " in the state dict but ", shape_str(dst.shape()),
             " in the model");
    dst.copy_(src);
  }
  for (const auto& [n, t] : given)
    if (!own.count(n)) report.unexpected.push_back(n);
  if (strict && (!report.missing.empty() || !report.unexpected.empty())) {
    std::string msg = "load_state_dict (strict):";
    for (const auto& n : report.missing) msg += " missing '" + n + "'";
    for (const auto& n : report.unexpected) msg += " unexpected '" + n + "'";
    RZ_THROW(msg);
  }
  return report;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

int64_t Module::set_requires_grad(const std::string& prefix, bool on) {
  int64_t matched = 0;
  for (auto& [n, t] : named_parameters()) {
    if (n.starts_with(prefix)) {
      t.impl().requires_grad = on;
      if (!on) t.zero_grad();
      ++matched;
    }
  }
  return matched;
}

void Module::to(Device device) {
  for (auto& [n, t] : state_dict()) {
    // Integer buffers (BN's num_batches_tracked) are host-side bookkeeping:
    // they stay on the CPU so counting a batch never waits for the device.
    if (t.device() == device || !is_floating(t.dtype())) continue;
    Tensor moved = t.to(device);
    t.impl().storage = moved.impl().storage;
    t.impl().offset = 0;
    t.zero_grad();
  }
}

void Module::to(DType dtype) {
  for (auto& [n, t] : state_dict()) {
    if (!is_floating(t.dtype()) || t.dtype() == dtype) continue;
    Tensor converted = t.to(dtype);
    t.impl().storage = converted.impl().storage;
    t.impl().offset = 0;
    t.impl().dtype = dtype;
    t.zero_grad();
  }
}

}  // namespace rz
