// Define-by-run autograd. Every differentiable op that sees an input requiring
// a gradient (with grad mode on) records one Node on its output; the node keeps
// edges to the nodes of its inputs and a backward function that captures only
// what it needs (SavedTensor). backward() walks the graph once in dependency
// order (Kahn), summing gradients that reach a node along several paths (the
// residual connection), then releases every node so saved activations are
// freed; a second backward through a released graph is an error.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace rz {

// Grad mode is per thread, like the current CUDA device: a scoped switch that
// the eval loop and the frozen teacher set, not shared state between threads.
bool grad_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

class Node {
 public:
  explicit Node(std::string name) : name_(std::move(name)) {}
  virtual ~Node() = default;
  const std::string& name() const { return name_; }

  // Gradients of the inputs given the gradient of the output, one per entry of
  // `next` (an undefined Tensor where no gradient flows).
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  // Frees whatever the node saved for backward.
  virtual void release() { released_ = true; }
  bool released() const { return released_; }

  // One edge per input of the op; nullptr for inputs that need no gradient.
  std::vector<std::shared_ptr<Node>> next;

 protected:
  bool released_ = false;

 private:
  std::string name_;
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

class FunctionNode final : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn) : Node(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  void release() override;

 private:
  BackwardFn fn_;
};

// The sink for a leaf tensor: adds the incoming gradient into leaf.grad().
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(const std::shared_ptr<TensorImpl>& leaf)
      : Node("AccumulateGrad"), leaf_(leaf) {}
  std::vector<Tensor> apply(const Tensor& grad_output) override;
  void release() override {}  // stateless: leaves can be reached by many backward passes

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// A tensor kept for backward. It holds a detached alias (no grad_fn, so no
// reference cycle through the output's own node) and the storage version at
// save time; get() refuses a tensor that was modified in place since.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  Tensor get(const char* op) const;

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
};

// True when grad mode is on and any defined input requires a gradient.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Makes `out` the output of a new node named `name` over `inputs` (in the
// order the backward function returns their gradients). Call only when
// any_requires_grad(inputs) is true.
void record_op(Tensor& out, const char* name, std::initializer_list<const Tensor*> inputs,
               BackwardFn backward);

// Runs backward from `root`; grad_root defaults to 1 for a one-element root.
void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph);

}  // namespace rz
