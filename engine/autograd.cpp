#include "engine/autograd.h"

#include "engine/cuda_context.h"

#include <deque>
#include <unordered_map>

#include "engine/ops.h"

namespace rz {

namespace {
thread_local bool t_grad_enabled = true;
}  // namespace

bool grad_enabled() { return t_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

std::vector<Tensor> FunctionNode::apply(const Tensor& grad_output) {
  RZ_CHECK(!released_, "backward through the graph a second time: the saved tensors of '",
           name(), "' were freed by the first backward (pass retain_graph=true to keep them)");
  NvtxRange range(name() + " backward");
  return fn_(grad_output);
}

void FunctionNode::release() {
  fn_ = nullptr;  // drops the captured SavedTensors
  released_ = true;
}

std::vector<Tensor> AccumulateGrad::apply(const Tensor& grad_output) {
  auto leaf = leaf_.lock();
  if (!leaf) return {};  // the parameter no longer exists: nothing to accumulate into
  RZ_CHECK(grad_output.shape() == leaf->shape, "gradient of shape ",
           shape_str(grad_output.shape()), " for a leaf of shape ", shape_str(leaf->shape));
  if (!leaf->grad) {
    // A private copy: the incoming tensor may alias another branch's gradient.
    leaf->grad = grad_output.clone().impl_ptr();
  } else {
    Tensor(leaf->grad).add_(grad_output);
  }
  if (leaf->grad_ready) leaf->grad_ready();
  return {};
}

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  tensor_ = t.detach();
  version_ = t.impl().storage->version();
}

Tensor SavedTensor::get(const char* op) const {
  if (tensor_.defined()) {
    RZ_CHECK(tensor_.impl().storage->version() == version_, "a tensor saved by '", op,
             "' for backward was modified in place afterwards (version ", version_, " -> ",
             tensor_.impl().storage->version(), ")");
  }
  return tensor_;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

namespace {
std::shared_ptr<Node> edge_to(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  // A leaf: all uses share one AccumulateGrad, so its gradient is summed in
  // the graph walk and added to .grad() once per backward.
  TensorImpl& impl = t.impl();
  if (auto acc = impl.grad_accumulator.lock()) return acc;
  auto acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
  impl.grad_accumulator = acc;
  return acc;
}
}  // namespace

void record_op(Tensor& out, const char* name, std::initializer_list<const Tensor*> inputs,
               BackwardFn backward) {
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->next.reserve(inputs.size());
  for (const Tensor* t : inputs) node->next.push_back(t ? edge_to(*t) : nullptr);
  out.impl().grad_fn = std::move(node);
}

void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph) {
  RZ_CHECK(root.defined(), "backward on an undefined tensor");
  RZ_CHECK(root.requires_grad(), "backward on a tensor that does not require grad (",
           root.str(), "): no parameter or input with requires_grad reached it");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    RZ_CHECK(root.numel() == 1, "backward without a gradient needs a one-element tensor, got ",
             root.str());
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  check_shape(seed, root.shape(), "backward gradient");

  NoGradGuard no_grad;  // gradients are computed without recording a graph
  std::shared_ptr<Node> start = edge_to(root);

  // Count, for every reachable node, how many edges lead into it.
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{start.get()};
  pending[start.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& nx : n->next) {
      if (!nx) continue;
      auto [it, inserted] = pending.try_emplace(nx.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(nx.get());
    }
  }

  // Kahn's order: a node runs once every consumer has delivered its gradient.
  std::unordered_map<Node*, Tensor> grads;
  grads[start.get()] = seed;
  std::deque<Node*> ready{start.get()};
  while (!ready.empty()) {
    Node* n = ready.front();
    ready.pop_front();
    Tensor g;
    if (auto it = grads.find(n); it != grads.end()) {
      g = std::move(it->second);
      grads.erase(it);
    }
    std::vector<Tensor> input_grads;
    if (g.defined()) input_grads = n->apply(g);
    if (!retain_graph) n->release();
    for (size_t i = 0; i < n->next.size(); ++i) {
      Node* nx = n->next[i].get();
      if (!nx) continue;
      if (i < input_grads.size() && input_grads[i].defined()) {
        Tensor& acc = grads[nx];
        acc = acc.defined() ? add(acc, input_grads[i]) : input_grads[i];
      }
      if (--pending[nx] == 0) ready.push_back(nx);
    }
  }
}

}  // namespace rz
