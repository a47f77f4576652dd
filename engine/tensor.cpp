#include "engine/tensor.h"

#include <sstream>

#include "engine/autograd.h"
#include "engine/cuda_check.h"
#include "engine/dispatch.h"
#include "kernels/common/convert.h"
#include "kernels/cpu/elementwise.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/elementwise.cuh"
#endif

namespace rz {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

// Checked: a shape read from a file ([2^32, 2^32, 0], [2^40, 2^40]) must not
// overflow. The product of the non-zero sizes has to fit in int64 even when a
// zero makes the count 0, so no later arithmetic on the sizes can overflow.
int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  bool zero = false;
  for (const int64_t d : s) {
    if (d < 0) RZ_THROW("shape ", shape_str(s), " has a negative size");
    if (d == 0) {
      zero = true;
    } else if (__builtin_mul_overflow(n, d, &n)) {
      RZ_THROW("shape ", shape_str(s), " has more elements than fit in 64 bits");
    }
  }
  return zero ? 0 : n;
}

TensorImpl& Tensor::impl() const {
  RZ_CHECK(impl_ != nullptr, "use of an undefined (empty) tensor");
  return *impl_;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t i = d < 0 ? d + n : d;
  RZ_CHECK(i >= 0 && i < n, "dimension ", d, " out of range for shape ", shape_str(shape()));
  return shape()[static_cast<size_t>(i)];
}

std::string Tensor::str() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

void* Tensor::raw_data() {
  auto& t = impl();
  return static_cast<char*>(t.storage->data()) + t.offset * static_cast<int64_t>(dtype_size(t.dtype));
}
const void* Tensor::raw_data() const { return const_cast<Tensor*>(this)->raw_data(); }

template <typename T> T* Tensor::data() {
  RZ_CHECK(dtype() == dtype_of<T>::value, "tensor ", str(), " accessed as ",
           dtype_name(dtype_of<T>::value));
  return static_cast<T*>(raw_data());
}
template <typename T> const T* Tensor::data() const { return const_cast<Tensor*>(this)->data<T>(); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) RZ_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  int64_t bytes = 0;
  if (__builtin_mul_overflow(shape_numel(shape), static_cast<int64_t>(dtype_size(dtype)), &bytes))
    RZ_THROW("Tensor::empty: shape ", shape_str(shape), " of ", dtype_name(dtype),
             " has a byte size that does not fit in 64 bits");
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(bytes), device);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

namespace {
template <typename Draw>
Tensor random_tensor(const Shape& shape, DType dtype, Device device, Draw draw) {
  // Drawn in double on the host, in element order, so a seed gives the same
  // values on every device and dtype (up to the final rounding).
  Tensor host = Tensor::empty(shape, DType::F64);
  double* p = host.data<double>();
  for (int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = draw();
  return host.to(dtype).to(device);
}
}  // namespace

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype,
                       Device device) {
  return random_tensor(shape, dtype, device, [&] { return gen.uniform(lo, hi); });
}
Tensor Tensor::normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype,
                      Device device) {
  bool have_spare = false;
  double spare = 0.0;
  return random_tensor(shape, dtype, device, [&] {
    if (have_spare) {
      have_spare = false;
      return spare;
    }
    const auto [a, b] = gen.normal_pair(mean, std);
    spare = b;
    have_spare = true;
    return a;
  });
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  RZ_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ",
           values.size(), " values for shape ", shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>::value);
  copy_bytes(host.raw_data(), Device::cpu(), values.data(), Device::cpu(), host.nbytes());
  return host.to(device);
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);
  if (this->device().is_cpu() && device.is_cuda())
    upload_bytes(out.raw_data(), device, impl().storage, raw_data(), nbytes());
  else
    copy_bytes(out.raw_data(), device, raw_data(), this->device(), nbytes());
  return out;
}

Tensor Tensor::to(DType dst_type) const {
  if (dst_type == dtype()) return *this;
  Tensor out = empty(shape(), dst_type, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_bytes(out.raw_data(), device(), raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::detach() const {
  auto v = std::make_shared<TensorImpl>();
  v->storage = impl().storage;
  v->offset = impl().offset;
  v->shape = impl().shape;
  v->dtype = impl().dtype;
  return Tensor(std::move(v));
}

Tensor Tensor::narrow0(int64_t start, int64_t length) const {
  RZ_CHECK(dim() >= 1, "narrow0 on a 0-d tensor");
  RZ_CHECK(start >= 0 && length >= 0 && start + length <= size(0), "narrow0: rows [", start,
           ", ", start + length, ") out of range for ", str());
  Tensor v = detach();
  v.impl().offset += start * (size(0) ? numel() / size(0) : 0);
  v.impl().shape[0] = length;
  return v;
}

double Tensor::item() const {
  RZ_CHECK(numel() == 1, "item() on ", str(), " (needs exactly one element)");
  Tensor host = to(Device::cpu()).to(DType::F64);
  return *host.data<double>();
}

template <typename T> std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::cpu());
  const T* p = host.data<T>();
  return std::vector<T>(p, p + numel());
}

Tensor& Tensor::fill_(double value) {
  bump_version();
  const int64_t n = numel();
  dispatch_all(dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = convert_element<double, T>(value);
    if (device().is_cpu()) {
      fill_cpu<T>(data<T>(), v, n);
    } else {
#if defined(RZ_HAVE_CUDA)
      RZ_CUDA_CHECK(fill_cuda<T>(data<T>(), v, n, cudaStreamPerThread));
#endif
    }
  });
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  RZ_CHECK(src.shape() == shape(), "copy_: source ", src.str(), " into ", str());
  bump_version();
  Tensor s = src.device() == device() ? src : src.to(device());
  if (s.dtype() == dtype()) {
    copy_bytes(raw_data(), device(), s.raw_data(), device(), nbytes());
    return *this;
  }
  const int64_t n = numel();
  dispatch_all(s.dtype(), [&](auto src_tag) {
    using S = decltype(src_tag);
    dispatch_all(dtype(), [&](auto dst_tag) {
      using D = decltype(dst_tag);
      if (device().is_cpu()) {
        cast_cpu<S, D>(s.data<S>(), data<D>(), n);
      } else {
#if defined(RZ_HAVE_CUDA)
        RZ_CUDA_CHECK((cast_cuda<S, D>(s.data<S>(), data<D>(), n, cudaStreamPerThread)));
#endif
      }
    });
  });
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  RZ_CHECK(other.shape() == shape() && other.dtype() == dtype() && other.device() == device(),
           "add_: ", other.str(), " into ", str());
  bump_version();
  if (device().is_cpu()) {
    dispatch_float(dtype(), "add_", [&](auto tag) {
      using T = decltype(tag);
      axpy_cpu<T>(static_cast<T>(alpha), other.data<T>(), data<T>(), numel());
    });
    return *this;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(dtype(), "add_", [&](auto tag) {
    using T = decltype(tag);
    RZ_CUDA_CHECK(axpy_cuda<T>(alpha, other.data<T>(), data<T>(), numel(), cudaStreamPerThread));
  });
#endif
  return *this;
}

Tensor& Tensor::mul_(double factor) {
  bump_version();
  if (device().is_cpu()) {
    dispatch_float(dtype(), "mul_", [&](auto tag) {
      using T = decltype(tag);
      scale_cpu<T>(data<T>(), static_cast<T>(factor), numel());
    });
    return *this;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(dtype(), "mul_", [&](auto tag) {
    using T = decltype(tag);
    RZ_CUDA_CHECK(scale_cuda<T>(data<T>(), factor, numel(), cudaStreamPerThread));
  });
#endif
  return *this;
}

Tensor& Tensor::set_requires_grad(bool on) {
  RZ_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor (the output of '",
           grad_fn()->name(), "'); detach() it first");
  RZ_CHECK(!on || is_floating(dtype()), "only floating tensors can require grad, not ", str());
  impl().requires_grad = on;
  return *this;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  run_backward(*this, grad, retain_graph);
}

void check_shape(const Tensor& t, const Shape& expected, const char* what) {
  RZ_CHECK(t.defined(), what, ": tensor is undefined, expected shape ", shape_str(expected));
  RZ_CHECK(t.shape() == expected, what, ": expected shape ", shape_str(expected), ", got ",
           shape_str(t.shape()));
}

#define RZ_INSTANTIATE_TENSOR(T)                                                     \
  template T* Tensor::data<T>();                                                     \
  template const T* Tensor::data<T>() const;                                         \
  template Tensor Tensor::from_vector<T>(const std::vector<T>&, const Shape&, Device); \
  template std::vector<T> Tensor::to_vector<T>() const;
RZ_INSTANTIATE_TENSOR(float)
RZ_INSTANTIATE_TENSOR(double)
RZ_INSTANTIATE_TENSOR(bf16)
RZ_INSTANTIATE_TENSOR(uint8_t)
RZ_INSTANTIATE_TENSOR(int64_t)

}  // namespace rz
