// Module: a node of the model tree with ordered, named parameters, buffers and
// children. Names compose recursively ("layer1.0.conv1.weight"), which is what
// state dicts and safetensors files are keyed by. Tensors are handles: the
// module's registry and the member a subclass keeps (e.g. Conv2d::weight)
// share one TensorImpl, so moving a module to a device or dtype updates both.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace rz {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Modules with one input and one output override this; Sequential chains them.
  virtual Tensor forward(const Tensor& x);
  // forward(x) inside an NVTX range named by type_name() (DESIGN decision 10),
  // so nsys timelines show the module tree.
  Tensor operator()(const Tensor& x);
  virtual std::string type_name() const { return "Module"; }

  NamedTensors named_parameters() const;  // depth-first, registration order
  NamedTensors named_buffers() const;
  NamedTensors state_dict() const;        // parameters, then buffers, per module in order
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const {
    return children_;
  }

  // Copies values by name into this module's tensors (dtype converted, shapes
  // must match). With strict, missing or unexpected names are an error; the
  // names are returned either way.
  struct LoadReport {
    std::vector<std::string> missing, unexpected;
  };
  LoadReport load_state_dict(const NamedTensors& state, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  // Sets requires_grad on every parameter whose full name starts with `prefix`
  // ("" for all); returns how many matched.
  int64_t set_requires_grad(const std::string& prefix, bool on);

  // Moves every parameter and floating buffer in place (integer buffers, such
  // as BN's num_batches_tracked, stay on the host); to(dtype) converts the
  // floating ones only.
  void to(Device device);
  void to(DType dtype);

 protected:
  Tensor register_parameter(std::string name, Tensor t);
  Tensor register_buffer(std::string name, Tensor t);
  template <typename M> std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    add_child(std::move(name), m);
    return m;
  }

 private:
  void add_child(std::string name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;

  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace rz
