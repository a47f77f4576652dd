// Optimizers over a list of parameter tensors, with PyTorch semantics (see
// kernels/cpu/optim.h for the exact update formulas). A parameter whose
// .grad() is undefined (frozen, or not reached by backward) is skipped and its
// state left untouched, as in PyTorch. The learning rate is set from outside
// (by an LrSchedule) before each step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/module.h"
#include "kernels/common/optim_math.h"

namespace rz {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  virtual std::string name() const = 0;
  void zero_grad();
  virtual void set_lr(double lr) = 0;
  virtual double lr() const = 0;
  // Per-parameter state tensors (momentum, first/second moments, step
  // counts as i64 scalars), in a fixed order, for checkpoints: "<index>.<slot>".
  virtual NamedTensors state() const = 0;
  // Restores what state() returned (copies; shapes and dtypes must match the
  // parameters). Slots absent from `state` leave that parameter fresh.
  virtual void load_state(const NamedTensors& state) = 0;
  const std::vector<Tensor>& params() const { return params_; }

  // ---- CUDA graph mode (a whole training step captured and replayed) ----
  // Call after at least one eager step (so every state exists), with all
  // parameters f32 on one CUDA device. From then on step() issues no host
  // synchronisation (it may be captured): it uploads its pointer table with an
  // asynchronous copy from pinned memory and reads the learning rate and
  // step-dependent scalars from a device buffer, which stage_graph_step()
  // fills for the coming step (advancing step counters as step() would).
  // Call stage_graph_step() before every step() or graph replay, never while
  // capturing. Every parameter must receive a gradient in every step.
  void enter_graph_mode();
  virtual void stage_graph_step() = 0;
  // Takes back the last stage_graph_step() (the step counters it advanced)
  // after a step that the gate skipped.
  virtual void unstage_graph_step() {}
  // Graph mode: a device fp32 scalar (the step's loss) that step() reads when
  // it runs; when it is not finite the update changes nothing. Undefined: no
  // gate. The tensor's storage must stay at the same address for every
  // replay (it is captured by address).
  void set_graph_gate(const Tensor& scalar);
  bool graph_mode() const { return graph_mode_; }

 protected:
  std::vector<Tensor> params_;
  bool graph_mode_ = false;
  Tensor coeffs_dev_;                    // the staged coefficients (device bytes)
  Tensor gate_;                          // graph mode: the step gate (or undefined)
  const float* gate_ptr() const;
  std::shared_ptr<void> graph_table_;    // pinned pointer table + its device copy
  void upload_coeffs(const void* host, size_t bytes);
};

class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, SgdHyper hyper);
  void step() override;
  std::string name() const override { return "sgd"; }
  void set_lr(double lr) override { hyper_.lr = lr; }
  double lr() const override { return hyper_.lr; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;
  void stage_graph_step() override;

 private:
  SgdHyper hyper_;
  std::vector<Tensor> momentum_;  // per parameter, created at its first step
};

// Adam, or AdamW when hyper.decoupled is set.
class Adam final : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamHyper hyper);
  void step() override;
  std::string name() const override { return hyper_.decoupled ? "adamw" : "adam"; }
  void set_lr(double lr) override { hyper_.lr = lr; }
  double lr() const override { return hyper_.lr; }
  NamedTensors state() const override;
  void load_state(const NamedTensors& state) override;
  void stage_graph_step() override;
  void unstage_graph_step() override;
  int64_t step_count(size_t param_index) const { return steps_.at(param_index); }

 private:
  AdamHyper hyper_;
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> steps_;  // per parameter, like PyTorch's state["step"]
};

// torch.nn.utils.clip_grad_norm_: the L2 norm over all defined gradients
// (accumulated in double); when it exceeds max_norm every gradient is scaled
// by max_norm / (norm + 1e-6). Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Weight EMA (timm ModelEmaV2): every floating parameter and buffer of `ema`
// becomes decay * ema + (1 - decay) * model; integer buffers are copied.
// The two modules must have the same state dict names and shapes.
// gate (graph mode, may be undefined): a device f32 scalar; when it is not
// finite the floating tensors of the EMA stay unchanged (see
// Optimizer::set_graph_gate).
void ema_update(Module& ema, const Module& model, double decay, const Tensor& gate = Tensor());

}  // namespace rz
