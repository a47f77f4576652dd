// Tensor: a shaped, typed view of a Storage on a device, plus its autograd
// state. Tensors are contiguous (row-major over their shape) starting at an
// element offset into the storage; reshape and narrow-on-dim-0 are views that
// share the storage. Image tensors are NHWC: [N, H, W, C].
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/generator.h"
#include "engine/storage.h"

namespace rz {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);

class Node;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  DType dtype = DType::F32;

  bool requires_grad = false;             // set on leaves; outputs of recorded ops have grad_fn
  std::shared_ptr<TensorImpl> grad;       // accumulated by backward (leaves only)
  std::shared_ptr<Node> grad_fn;          // the op that produced this tensor, if recorded
  std::weak_ptr<Node> grad_accumulator;   // leaves: the shared AccumulateGrad sink
  // Leaves: called once per backward, right after that backward's gradient
  // was added into `grad` (data-parallel training starts its reduction here).
  std::function<void()> grad_ready;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::cpu());
  static Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen,
                        DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor normal(const Shape& shape, double mean, double std, Generator& gen,
                       DType dtype = DType::F32, Device device = Device::cpu());
  // Copies host values into a new tensor of dtype_of<T> (converted to `dtype` if given).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

  // ---- properties ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string str() const;  // "f32[2, 3] on cpu"

  // Raw element pointer (host or device address). data<T>() checks that T
  // matches the dtype; callers check the device.
  void* raw_data();
  const void* raw_data() const;
  template <typename T> T* data();
  template <typename T> const T* data() const;

  // ---- conversions and copies (not differentiable) ----
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  // A view of the same storage with no autograd history.
  Tensor detach() const;
  // Rows [start, start+length) of dim 0, sharing storage (no autograd).
  Tensor narrow0(int64_t start, int64_t length) const;
  double item() const;  // one-element tensors, any dtype and device
  template <typename T> std::vector<T> to_vector() const;  // host copy, dtype must match

  // ---- in-place, not differentiable (optimizers, init, loading) ----
  Tensor& fill_(double value);
  Tensor& copy_(const Tensor& src);  // same shape; converts dtype and device
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other
  Tensor& mul_(double factor);
  void bump_version() { impl().storage->bump_version(); }

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad || impl().grad_fn != nullptr; }
  // Marks a leaf as a parameter-like tensor whose .grad() backward fills.
  Tensor& set_requires_grad(bool on);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  // Backward from this tensor (one element unless `grad` is given).
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  TensorImpl& impl() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Throws unless the tensor has exactly this shape.
void check_shape(const Tensor& t, const Shape& expected, const char* what);

}  // namespace rz
