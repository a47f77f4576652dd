#include "train/train_step.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda_context.h"
#include "engine/ops.h"

namespace rz {

TrainStep::TrainStep(const TrainConfig& cfg, const Compute& compute, ResNet& model, ResNet* teacher, ResNet* ema,
                     Optimizer& optim, std::vector<Tensor> trainable, std::function<void(const std::string&)> log)
    : cfg_(cfg), compute_(compute), model_(model), teacher_(teacher), ema_(ema), optim_(optim),
      trainable_(std::move(trainable)), log_(std::move(log)), kd_(cfg.stage.kind == "student-kd") {
  RZ_CHECK(!kd_ || teacher_, "student-kd step without a teacher");
  for (const auto& name : cfg.stage.feat_layers) {  // "layer1".."layer4", checked by validate_config
    feat_stages_.push_back(static_cast<size_t>(name.back() - '1'));
    teacher_stages_ = std::max(teacher_stages_, static_cast<int64_t>(feat_stages_.back()) + 1);
  }
}

// BCE (scaled by w_bce), plus w_feat * the mean over stage.feat_layers of the
// MSE between the student's and the frozen teacher's stage outputs for
// student-kd (xt: the teacher's input, the annotated image).
Tensor TrainStep::forward_loss(const Tensor& x, const Tensor& xt, const Tensor& y) {
  if (!kd_) return scale(bce_with_logits(model_.forward(x), y), cfg_.stage.w_bce);
  std::vector<Tensor> teacher_stages;
  {
    NoGradGuard no_grad;
    teacher_stages = teacher_->forward_stages(xt, teacher_stages_);
  }
  // The student always runs to the head; its shallower outputs come with it.
  std::vector<Tensor> stages = model_.forward_stages(x);
  Tensor logits = model_.forward_head(stages.back());
  Tensor feat;
  for (size_t i : feat_stages_) {
    const Tensor m = mse_loss(stages[i], teacher_stages[i]);
    feat = feat.defined() ? add(feat, m) : m;
  }
  feat_term_ = feat_stages_.size() == 1 ? feat : scale(feat, 1.0 / static_cast<double>(feat_stages_.size()));
  return add(scale(bce_with_logits(logits, y), cfg_.stage.w_bce), scale(feat_term_, cfg_.stage.w_feat));
}

StepResult TrainStep::run(const Tensor& images, const Tensor& images_annotated, const Tensor& labels, double lr,
                          bool last_micro) {
  if (cfg_.train.cuda_graph) return run_graphed(images, images_annotated, labels, lr);
  return run_eager(images, images_annotated, labels, lr, last_micro);
}

StepResult TrainStep::run_eager(const Tensor& images, const Tensor& images_annotated, const Tensor& labels,
                                double lr, bool last_micro) {
  StepResult r;
  const Tensor y = labels.to(compute_.device);
  const Tensor x = to_compute(images, compute_);
  Tensor loss;
  {
    NvtxRange range("forward");
    loss = forward_loss(x, kd_ ? to_compute(images_annotated, compute_) : Tensor(), y);
  }
  double terms[2] = {loss.item(), kd_ ? feat_term_.item() : 0.0};
  feat_term_ = Tensor();  // no reference to this step's graph past the step
  if (sync_) sync_->average(terms, 2);
  r.loss = terms[0];
  r.feat = terms[1];
  // The one gate: a non-finite loss (on any rank) skips the step, and drops
  // what an accumulation had gathered so far.
  if (!std::isfinite(r.loss)) {
    optim_.zero_grad();
    r.finite = false;
    return r;
  }
  {
    NvtxRange range("backward");
    if (sync_) sync_->begin_backward(last_micro);
    scale(loss, 1.0 / static_cast<double>(cfg_.train.accum_steps)).backward();
  }
  if (!last_micro) return r;
  NvtxRange range("optimizer");
  if (sync_) sync_->finish();
  optim_.set_lr(lr);
  if (cfg_.train.clip_grad > 0) r.grad_norm = clip_grad_norm(trainable_, cfg_.train.clip_grad);
  optim_.step();
  optim_.zero_grad();
  if (ema_) ema_update(*ema_, model_, cfg_.train.ema_decay);
  r.stepped = true;
  return r;
}

// One graph-mode step on the static tensors. eager_check: the first (plain
// eager) step reads the loss before updating and stops on a non-finite one,
// like the eager path. In graph mode the optimizer's gate is the loss: a
// non-finite loss makes the (captured) update change nothing.
void TrainStep::graph_body(bool eager_check) {
  Tensor loss = forward_loss(g_.x, g_.xt, g_.y);
  g_.loss.copy_(loss);
  if (kd_) g_.feat.copy_(feat_term_);
  feat_term_ = Tensor();
  if (eager_check && !std::isfinite(g_.loss.item())) return;
  if (optim_.graph_mode()) optim_.set_graph_gate(g_.loss);
  loss.backward();
  optim_.step();
  optim_.zero_grad();
  if (ema_) ema_update(*ema_, model_, cfg_.train.ema_decay, optim_.graph_mode() ? g_.loss : Tensor());
}

StepResult TrainStep::run_graphed(const Tensor& images, const Tensor& images_annotated, const Tensor& labels,
                                  double lr) {
  RZ_CHECK(!sync_, "train.cuda_graph with data-parallel training is not supported");
  if (!g_.x.defined()) {
    g_.x = Tensor::empty(images.shape(), compute_.activations, compute_.device);
    g_.y = Tensor::empty(labels.shape(), DType::F32, compute_.device);
    if (kd_) g_.xt = Tensor::empty(images_annotated.shape(), compute_.activations, compute_.device);
    g_.loss = Tensor::empty({}, DType::F32, compute_.device);
    if (kd_) g_.feat = Tensor::empty({}, DType::F32, compute_.device);
  }
  g_.x.copy_(images);
  g_.y.copy_(labels);
  if (kd_) g_.xt.copy_(images_annotated);
  optim_.set_lr(lr);
  bool staged = false;
  if (g_.eager_steps == 0) {
    graph_body(true);
    if (std::isfinite(g_.loss.item())) {
      optim_.enter_graph_mode();
      ++g_.eager_steps;
    }
  } else {
    optim_.stage_graph_step();
    staged = true;
    if (g_.eager_steps == 1) {
      graph_body(false);
      ++g_.eager_steps;
    } else {
      if (!g_.graph.ready()) {
        g_.graph.begin_capture(compute_.device.index);
        graph_body(false);
        g_.graph.end_capture();
        log_("cuda graph: captured one training step (" + std::to_string(g_.graph.node_count()) + " nodes)");
      }
      g_.graph.replay();
    }
  }
  StepResult r;
  r.loss = g_.loss.item();
  r.feat = kd_ ? g_.feat.item() : 0.0;
  if (!std::isfinite(r.loss)) {
    if (staged) {
      optim_.unstage_graph_step();  // the gated update changed nothing
    } else {
      optim_.zero_grad();
    }
    r.finite = false;
    return r;
  }
  r.stepped = true;
  return r;
}

}  // namespace rz
