// One training step of a stage, apart from the run loop around it: the loss
// (BCE, plus the feature MSE against the frozen teacher for student-kd),
// backward, gradient accumulation, clipping, the optimizer and the EMA, run
// eagerly or as a captured CUDA graph (train.cuda_graph), with one gate for a
// non-finite loss. Data parallelism hooks in here (GradientSync): the step
// tells it before backward whether this micro-batch ends an accumulation,
// and waits for it before clipping and the optimizer.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda_graph.h"
#include "engine/optim.h"
#include "models/seresnet.h"
#include "train/compute.h"
#include "train/config.h"

namespace rz {

// The gradient averaging of data-parallel training (train/data_parallel.h).
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  // Before backward: `reduce` says whether this backward completes the
  // gradients the optimizer will use (the last micro-batch of accumulation).
  virtual void begin_backward(bool reduce) = 0;
  // After backward, before clipping and the optimizer: every gradient is the
  // average over the ranks. Throws on a rank that failed or timed out.
  virtual void finish() = 0;
  // Replaces each value by its mean over the ranks (the step's loss terms:
  // the logged loss is then the global batch's, and a non-finite loss on
  // any rank makes every rank skip the step together).
  virtual void average(double* values, int n) = 0;
};

struct StepResult {
  bool finite = true;      // false: the step was skipped, nothing applied
  bool stepped = false;    // the optimizer ran (the last micro-batch of an accumulation)
  double loss = 0;         // the batch's loss (before the accumulation scale)
  double feat = 0;         // student-kd: the unweighted feature MSE
  double grad_norm = 0;    // before clipping, when train.clip_grad > 0
};

class TrainStep {
 public:
  // teacher: the frozen teacher (student-kd), else null; ema: the EMA copy
  // (train.ema_decay > 0), else null. `log` gets the one-time graph capture line.
  TrainStep(const TrainConfig& cfg, const Compute& compute, ResNet& model, ResNet* teacher, ResNet* ema,
            Optimizer& optim, std::vector<Tensor> trainable, std::function<void(const std::string&)> log);

  // One micro-batch: images and (student-kd) the annotated twins on the
  // host, labels on the host, the learning rate of the optimizer step this
  // micro-batch belongs to. The optimizer runs when `last_micro` (the
  // accumulation of train.accum_steps micro-batches is complete). A
  // non-finite loss skips the step: no update, and the gradients accumulated
  // so far are dropped.
  StepResult run(const Tensor& images, const Tensor& images_annotated, const Tensor& labels, double lr,
                 bool last_micro);

  void set_gradient_sync(GradientSync* sync) { sync_ = sync; }

 private:
  Tensor forward_loss(const Tensor& x, const Tensor& xt, const Tensor& y);
  StepResult run_eager(const Tensor& images, const Tensor& images_annotated, const Tensor& labels, double lr,
                       bool last_micro);
  StepResult run_graphed(const Tensor& images, const Tensor& images_annotated, const Tensor& labels, double lr);
  void graph_body(bool eager_check);

  const TrainConfig& cfg_;
  Compute compute_;
  ResNet& model_;
  ResNet* teacher_;
  ResNet* ema_;
  Optimizer& optim_;
  std::vector<Tensor> trainable_;
  std::function<void(const std::string&)> log_;
  GradientSync* sync_ = nullptr;
  bool kd_;
  std::vector<size_t> feat_stages_;  // student-kd: stage.feat_layers as 0-based stage indices
  int64_t teacher_stages_ = 0;       // how far the teacher runs: the deepest of those, 1-based
  Tensor feat_term_;  // student-kd: the last forward's unweighted feature MSE

  // train.cuda_graph: static inputs and outputs, then step 1 eager, step 2
  // the graph-mode path eagerly, step 3 captured and replayed, every later
  // step replayed.
  struct Graph {
    Tensor x, xt, y, loss, feat;
    CudaGraph graph;
    int eager_steps = 0;
  } g_;
};

}  // namespace rz
