// Elementwise ops, reductions to a scalar, and reshape views.
#include "engine/autograd.h"
#include "engine/cuda_check.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/permute.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/elementwise.cuh"
#endif

namespace rz {

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  RZ_CHECK(a.defined() && b.defined(), op, ": undefined input");
  RZ_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.str(), " vs ", b.str());
  RZ_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.str(), " vs ", b.str());
}

void check_cpu(const Tensor& t, const char* op) {
  RZ_CHECK(t.device().is_cpu(), op, " has no CUDA kernel in this build yet (input ", t.str(), ")");
}

namespace {
enum class Binary { Add, Sub, Mul };

Tensor binary_forward(const Tensor& a, const Tensor& b, Binary kind, const char* op) {
  check_same(a, b, op);
  RZ_CHECK(a.shape() == b.shape(), op, ": shape mismatch ", shape_str(a.shape()), " vs ",
           shape_str(b.shape()));
  Tensor c = Tensor::empty_like(a);
  const int64_t n = a.numel();
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    if (a.device().is_cpu()) {
      switch (kind) {
        case Binary::Add: add_cpu(pa, pb, pc, n); break;
        case Binary::Sub: sub_cpu(pa, pb, pc, n); break;
        case Binary::Mul: mul_cpu(pa, pb, pc, n); break;
      }
    } else {
#if defined(RZ_HAVE_CUDA)
      switch (kind) {
        case Binary::Add: RZ_CUDA_CHECK(add_cuda(pa, pb, pc, n, cudaStreamPerThread)); break;
        case Binary::Sub: RZ_CUDA_CHECK(sub_cuda(pa, pb, pc, n, cudaStreamPerThread)); break;
        case Binary::Mul: RZ_CUDA_CHECK(mul_cuda(pa, pb, pc, n, cudaStreamPerThread)); break;
      }
#endif
    }
  });
  return c;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor c = binary_forward(a, b, Binary::Add, "add");
  if (any_requires_grad({&a, &b}))
    record_op(c, "add", {&a, &b}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return c;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor c = binary_forward(a, b, Binary::Sub, "sub");
  if (any_requires_grad({&a, &b}))
    record_op(c, "sub", {&a, &b},
              [](const Tensor& g) { return std::vector<Tensor>{g, scale(g, -1.0)}; });
  return c;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor c = binary_forward(a, b, Binary::Mul, "mul");
  if (any_requires_grad({&a, &b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    SavedTensor sa(need_b ? a : Tensor());  // each gradient needs only the other factor
    SavedTensor sb(need_a ? b : Tensor());
    record_op(c, "mul", {&a, &b}, [sa, sb, need_a, need_b](const Tensor& g) {
      return std::vector<Tensor>{need_a ? mul(g, sb.get("mul")) : Tensor(),
                                 need_b ? mul(g, sa.get("mul")) : Tensor()};
    });
  }
  return c;
}

Tensor scale(const Tensor& a, double factor) {
  Tensor c = a.clone();
  c.mul_(factor);
  if (any_requires_grad({&a}))
    record_op(c, "scale", {&a},
              [factor](const Tensor& g) { return std::vector<Tensor>{scale(g, factor)}; });
  return c;
}

namespace {
// An elementwise activation whose gradient is a function of its output (so
// backward saves only y): relu and sigmoid.
template <typename Fwd, typename Bwd>
Tensor activation(const Tensor& x, const char* op, Fwd fwd, Bwd bwd) {
  check_cpu(x, op);
  Tensor y = Tensor::empty_like(x);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    fwd(x.data<T>(), y.data<T>(), x.numel());
  });
  if (any_requires_grad({&x})) {
    SavedTensor sy(y);
    record_op(y, op, {&x}, [sy, op, bwd](const Tensor& g) {
      Tensor out = sy.get(op);
      Tensor dx = Tensor::empty_like(g);
      dispatch_float(g.dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        bwd(out.data<T>(), g.data<T>(), dx.data<T>(), g.numel());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}
}  // namespace

Tensor relu(const Tensor& x) {
  // The output decides the mask: x > 0 <=> y > 0.
  return activation(
      x, "relu", [](const auto* in, auto* out, int64_t n) { relu_fwd_cpu(in, out, n); },
      [](const auto* y, const auto* dy, auto* dx, int64_t n) { relu_bwd_cpu(y, dy, dx, n); });
}

Tensor sigmoid(const Tensor& x) {
  return activation(
      x, "sigmoid", [](const auto* in, auto* out, int64_t n) { sigmoid_fwd_cpu(in, out, n); },
      [](const auto* y, const auto* dy, auto* dx, int64_t n) { sigmoid_bwd_cpu(y, dy, dx, n); });
}

Tensor sum(const Tensor& x) {
  check_cpu(x, "sum");
  const double total = dispatch_float(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    return sum_cpu(x.data<T>(), x.numel());
  });
  Tensor y = Tensor::full({}, total, x.dtype(), x.device());
  if (any_requires_grad({&x})) {
    const Shape shape = x.shape();
    record_op(y, "sum", {&x}, [shape](const Tensor& g) {
      return std::vector<Tensor>{Tensor::full(shape, g.item(), g.dtype(), g.device())};
    });
  }
  return y;
}

Tensor mean(const Tensor& x) {
  RZ_CHECK(x.numel() > 0, "mean of an empty tensor ", x.str());
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor dropout(const Tensor& x, double p, Generator& gen) {
  RZ_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  if (p == 0) return x;
  Tensor mask = Tensor::empty(x.shape(), DType::F64);
  double* m = mask.data<double>();
  const double keep_scale = 1.0 / (1.0 - p);
  for (int64_t i = 0, n = mask.numel(); i < n; ++i) m[i] = gen.uniform() < p ? 0.0 : keep_scale;
  return mul(x, mask.to(x.dtype()).to(x.device()));
}

Tensor reshape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      RZ_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      RZ_CHECK(shape[i] >= 0, "reshape: bad dimension in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    RZ_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot infer -1 in ",
             shape_str(shape), " for ", x.str());
    shape[static_cast<size_t>(infer)] = x.numel() / known;
  }
  RZ_CHECK(shape_numel(shape) == x.numel(), "reshape: ", x.str(), " has ", x.numel(),
           " elements, target shape ", shape_str(shape), " has ", shape_numel(shape));
  Tensor y = x.detach();
  y.impl().shape = shape;
  if (any_requires_grad({&x})) {
    const Shape in_shape = x.shape();
    record_op(y, "reshape", {&x},
              [in_shape](const Tensor& g) { return std::vector<Tensor>{reshape(g, in_shape)}; });
  }
  return y;
}

Tensor permute(const Tensor& x, std::array<int, 4> perm) {
  check_cpu(x, "permute");
  RZ_CHECK(x.dim() == 4, "permute: expects a 4-D tensor, got ", x.str());
  std::array<bool, 4> seen{};
  for (int p : perm) {
    RZ_CHECK(p >= 0 && p < 4 && !seen[static_cast<size_t>(p)], "permute: bad permutation {",
             perm[0], ", ", perm[1], ", ", perm[2], ", ", perm[3], "}");
    seen[static_cast<size_t>(p)] = true;
  }
  const std::array<int64_t, 4> dims = {x.size(0), x.size(1), x.size(2), x.size(3)};
  Shape out_shape(4);
  std::array<int, 4> inverse{};
  for (int d = 0; d < 4; ++d) {
    out_shape[static_cast<size_t>(d)] = dims[static_cast<size_t>(perm[static_cast<size_t>(d)])];
    inverse[static_cast<size_t>(perm[static_cast<size_t>(d)])] = d;
  }
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  auto run = [&](auto tag) {
    using U = decltype(tag);
    permute4_cpu(static_cast<const U*>(x.raw_data()), static_cast<U*>(y.raw_data()), dims, perm);
  };
  switch (dtype_size(x.dtype())) {
    case 1: run(uint8_t{}); break;
    case 2: run(uint16_t{}); break;
    case 4: run(uint32_t{}); break;
    default: run(uint64_t{}); break;
  }
  if (any_requires_grad({&x}))
    record_op(y, "permute", {&x},
              [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  return y;
}

Tensor flatten(const Tensor& x) {
  RZ_CHECK(x.dim() >= 1, "flatten needs a batch dimension, got ", x.str());
  return reshape(x, {x.size(0), -1});
}

}  // namespace rz
