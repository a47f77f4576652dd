#include "engine/optim.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/cpu/optim.h"

namespace rz {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (size_t i = 0; i < params_.size(); ++i) {
    RZ_CHECK(params_[i].defined() && is_floating(params_[i].dtype()),
             "optimizer parameter ", i, " must be a floating tensor");
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

namespace {
void check_grad(const Tensor& p, const Tensor& g, size_t i) {
  RZ_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(),
           "gradient of parameter ", i, " is ", g.str(), " but the parameter is ", p.str());
  check_cpu(p, "optimizer step");
}
}  // namespace

Sgd::Sgd(std::vector<Tensor> params, SgdHyper hyper)
    : Optimizer(std::move(params)), hyper_(hyper), momentum_(params_.size()) {
  RZ_CHECK(hyper.lr >= 0 && hyper.momentum >= 0 && hyper.weight_decay >= 0, "sgd: lr ", hyper.lr,
           " momentum ", hyper.momentum, " weight_decay ", hyper.weight_decay);
  RZ_CHECK(!hyper.nesterov || (hyper.momentum > 0 && hyper.dampening == 0),
           "sgd: nesterov needs momentum > 0 and dampening 0");
}

void Sgd::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    check_grad(p, g, i);
    const bool first = hyper_.momentum != 0 && !momentum_[i].defined();
    if (first) momentum_[i] = Tensor::zeros_like(p);
    p.bump_version();
    dispatch_float(p.dtype(), "sgd", [&](auto tag) {
      using T = decltype(tag);
      sgd_step_cpu(p.data<T>(), g.data<T>(),
                   momentum_[i].defined() ? momentum_[i].data<T>() : nullptr, p.numel(), hyper_,
                   first);
    });
  }
}

NamedTensors Sgd::state() const {
  NamedTensors out;
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) out.emplace_back(std::to_string(i) + ".momentum_buffer", momentum_[i]);
  return out;
}

namespace {
// Finds "<index>.<slot>" in a saved optimizer state; checks it against the parameter.
Tensor saved_slot(const NamedTensors& state, size_t index, const char* slot, const Tensor& like) {
  const std::string key = std::to_string(index) + "." + slot;
  for (const auto& [name, t] : state) {
    if (name != key) continue;
    RZ_CHECK(t.shape() == like.shape(), "optimizer state '", key, "' has shape ",
             shape_str(t.shape()), " but the parameter has ", shape_str(like.shape()));
    Tensor copy = Tensor::empty(like.shape(), like.dtype(), like.device());
    copy.copy_(t);
    return copy;
  }
  return Tensor();
}

int64_t saved_step(const NamedTensors& state, size_t index) {
  const std::string key = std::to_string(index) + ".step";
  for (const auto& [name, t] : state)
    if (name == key) return static_cast<int64_t>(t.item());
  return 0;
}
}  // namespace

void Sgd::load_state(const NamedTensors& state) {
  for (size_t i = 0; i < params_.size(); ++i)
    momentum_[i] = saved_slot(state, i, "momentum_buffer", params_[i]);
}

void Adam::load_state(const NamedTensors& state) {
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i] = saved_slot(state, i, "exp_avg", params_[i]);
    v_[i] = saved_slot(state, i, "exp_avg_sq", params_[i]);
    steps_[i] = saved_step(state, i);
    RZ_CHECK(m_[i].defined() == v_[i].defined() && (m_[i].defined() == (steps_[i] > 0)),
             "optimizer state for parameter ", i, " is incomplete (exp_avg, exp_avg_sq, step)");
  }
}

Adam::Adam(std::vector<Tensor> params, AdamHyper hyper)
    : Optimizer(std::move(params)),
      hyper_(hyper),
      m_(params_.size()),
      v_(params_.size()),
      steps_(params_.size(), 0) {
  RZ_CHECK(hyper.lr >= 0 && hyper.eps >= 0 && hyper.weight_decay >= 0, "adam: lr ", hyper.lr,
           " eps ", hyper.eps, " weight_decay ", hyper.weight_decay);
  RZ_CHECK(hyper.beta1 >= 0 && hyper.beta1 < 1 && hyper.beta2 >= 0 && hyper.beta2 < 1,
           "adam: betas must be in [0, 1), got ", hyper.beta1, ", ", hyper.beta2);
}

void Adam::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    check_grad(p, g, i);
    if (!m_[i].defined()) {
      m_[i] = Tensor::zeros_like(p);
      v_[i] = Tensor::zeros_like(p);
    }
    ++steps_[i];
    p.bump_version();
    dispatch_float(p.dtype(), "adam", [&](auto tag) {
      using T = decltype(tag);
      adam_step_cpu(p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(), p.numel(),
                    hyper_, steps_[i]);
    });
  }
}

NamedTensors Adam::state() const {
  NamedTensors out;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (!m_[i].defined()) continue;
    out.emplace_back(std::to_string(i) + ".exp_avg", m_[i]);
    out.emplace_back(std::to_string(i) + ".exp_avg_sq", v_[i]);
    out.emplace_back(std::to_string(i) + ".step", Tensor::full({}, static_cast<double>(steps_[i]), DType::I64));
  }
  return out;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  RZ_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
  double sq = 0;
  for (const auto& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor sq_sum = sum(mul(g, g));
    sq += sq_sum.item();
  }
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    for (const auto& p : params) {
      Tensor g = p.grad();
      if (g.defined()) g.mul_(coef);
    }
  }
  return norm;
}

void ema_update(Module& ema, const Module& model, double decay) {
  RZ_CHECK(decay >= 0 && decay <= 1, "ema_update: decay must be in [0, 1], got ", decay);
  NoGradGuard no_grad;
  const NamedTensors e = ema.state_dict(), m = model.state_dict();
  RZ_CHECK(e.size() == m.size(), "ema_update: the EMA has ", e.size(), " tensors, the model ", m.size());
  for (size_t i = 0; i < e.size(); ++i) {
    RZ_CHECK(e[i].first == m[i].first && e[i].second.shape() == m[i].second.shape(),
             "ema_update: '", e[i].first, "' does not match the model's '", m[i].first, "'");
    Tensor dst = e[i].second;
    if (!is_floating(dst.dtype())) {
      dst.copy_(m[i].second);
      continue;
    }
    dst.mul_(decay);
    dst.add_(m[i].second.dtype() == dst.dtype() ? m[i].second : m[i].second.to(dst.dtype()), 1.0 - decay);
  }
}

}  // namespace rz
