// Elementwise ops, reductions to a scalar, and reshape views.
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/permute.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/reduce.cuh"
#endif

namespace rz {

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  RZ_CHECK(a.defined() && b.defined(), op, ": undefined input");
  RZ_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.str(), " vs ", b.str());
  RZ_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.str(), " vs ", b.str());
}

Tensor weight_for(const Tensor& x, const Tensor& w, const char* op) {
  RZ_CHECK(x.defined() && w.defined(), op, ": undefined input");
  RZ_CHECK(x.device() == w.device(), op, ": device mismatch: ", x.str(), " vs ", w.str());
  if (x.dtype() == w.dtype()) return w;
  RZ_CHECK(x.device().is_cuda() && x.dtype() == DType::BF16 && w.dtype() == DType::F32, op,
           ": dtype mismatch: input ", x.str(), ", weight ", w.str(),
           " (mixed precision is bf16 activations with f32 weights on CUDA)");
  return cast(w, x.dtype());
}

Tensor cast(const Tensor& x, DType dtype) {
  RZ_CHECK(x.defined(), "cast: undefined input");
  if (x.dtype() == dtype) return x;
  Tensor y = x.detach().to(dtype);
  if (any_requires_grad({&x})) {
    const DType back = x.dtype();
    record_op(y, "cast", {&x}, [back](const Tensor& g) { return std::vector<Tensor>{g.to(back)}; });
  }
  return y;
}

namespace {
enum class Binary { Add, Sub, Mul };

Tensor binary_forward(const Tensor& a, const Tensor& b, Binary kind, const char* op) {
  NvtxRange range(op);
  check_same(a, b, op);
  RZ_CHECK(a.shape() == b.shape(), op, ": shape mismatch ", shape_str(a.shape()), " vs ",
           shape_str(b.shape()));
  Tensor c = Tensor::empty_like(a);
  const int64_t n = a.numel();
  if (a.device().is_cpu()) {
    dispatch_float(a.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* pc = c.data<T>();
      switch (kind) {
        case Binary::Add: add_cpu(pa, pb, pc, n); break;
        case Binary::Sub: sub_cpu(pa, pb, pc, n); break;
        case Binary::Mul: mul_cpu(pa, pb, pc, n); break;
      }
    });
    return c;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    switch (kind) {
      case Binary::Add: RZ_CUDA_CHECK(add_cuda(pa, pb, pc, n, op_stream())); break;
      case Binary::Sub: RZ_CUDA_CHECK(sub_cuda(pa, pb, pc, n, op_stream())); break;
      case Binary::Mul: RZ_CUDA_CHECK(mul_cuda(pa, pb, pc, n, op_stream())); break;
    }
  });
#else
  no_cuda_backend(op);
#endif
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
enum class Act { Relu, Sigmoid };

void activation_fwd(Act act, const Tensor& x, Tensor& y, const char* op) {
  const int64_t n = x.numel();
  if (x.device().is_cpu()) {
    dispatch_float(x.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (act == Act::Relu) relu_fwd_cpu(x.data<T>(), y.data<T>(), n);
      else sigmoid_fwd_cpu(x.data<T>(), y.data<T>(), n);
    });
    return;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (act == Act::Relu) RZ_CUDA_CHECK(relu_fwd_cuda(x.data<T>(), y.data<T>(), n, op_stream()));
    else RZ_CUDA_CHECK(sigmoid_fwd_cuda(x.data<T>(), y.data<T>(), n, op_stream()));
  });
#else
  no_cuda_backend(op);
#endif
}

void activation_bwd(Act act, const Tensor& y, const Tensor& dy, Tensor& dx, const char* op) {
  const int64_t n = dy.numel();
  if (dy.device().is_cpu()) {
    dispatch_float(dy.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      if (act == Act::Relu) relu_bwd_cpu(y.data<T>(), dy.data<T>(), dx.data<T>(), n);
      else sigmoid_bwd_cpu(y.data<T>(), dy.data<T>(), dx.data<T>(), n);
    });
    return;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(dy.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (act == Act::Relu)
      RZ_CUDA_CHECK(relu_bwd_cuda(y.data<T>(), dy.data<T>(), dx.data<T>(), n, op_stream()));
    else
      RZ_CUDA_CHECK(sigmoid_bwd_cuda(y.data<T>(), dy.data<T>(), dx.data<T>(), n, op_stream()));
  });
#else
  no_cuda_backend(op);
#endif
}

// An elementwise activation whose gradient is a function of its output (so
// backward saves only y): relu and sigmoid.
Tensor activation(const Tensor& x, Act act, const char* op) {
  NvtxRange range(op);
  RZ_CHECK(x.defined(), op, ": undefined input");
  Tensor y = Tensor::empty_like(x);
  activation_fwd(act, x, y, op);
  if (any_requires_grad({&x})) {
    SavedTensor sy(y);
    record_op(y, op, {&x}, [sy, op, act](const Tensor& g) {
      Tensor out = sy.get(op);
      Tensor dx = Tensor::empty_like(g);
      activation_bwd(act, out, g, dx, op);
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}
}  // namespace

// relu: the output decides the mask (x > 0 <=> y > 0).
Tensor relu(const Tensor& x) { return activation(x, Act::Relu, "relu"); }
Tensor sigmoid(const Tensor& x) { return activation(x, Act::Sigmoid, "sigmoid"); }

Tensor sum(const Tensor& x) {
  RZ_CHECK(x.defined(), "sum: undefined input");
  if (x.device().is_cpu()) {
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
#if defined(RZ_HAVE_CUDA)
  // On CUDA the sum is accumulated in double and returned as f32 (also for
  // bf16 inputs); backward broadcasts the device scalar without a host sync.
  Tensor y = Tensor::empty({}, DType::F32, x.device());
  dispatch_cuda_float(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    RZ_CUDA_CHECK(sum_cuda(x.data<T>(), x.numel(), y.data<float>(), op_stream()));
  });
  if (any_requires_grad({&x})) {
    const Shape shape = x.shape();
    const DType dtype = x.dtype();
    record_op(y, "sum", {&x}, [shape, dtype](const Tensor& g) {
      Tensor gf = g.to(DType::F32);
      Tensor dx = Tensor::empty(shape, dtype, g.device());
      dispatch_cuda_float(dtype, "sum backward", [&](auto tag) {
        using T = decltype(tag);
        RZ_CUDA_CHECK(fill_from_scalar_cuda(dx.data<T>(), gf.data<float>(), dx.numel(), op_stream()));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
#else
  no_cuda_backend("sum");
#endif
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
      RZ_CHECK(!__builtin_mul_overflow(known, shape[i], &known), "reshape: the size of ",
               shape_str(shape), " overflows 64 bits");
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
  if (x.device().is_cpu()) {
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
  } else {
#if defined(RZ_HAVE_CUDA)
    // Moves bits only: any 2- or 4-byte element type goes through bf16 / float.
    const size_t es = dtype_size(x.dtype());
    RZ_CHECK(es == 2 || es == 4, "permute: ", x.str(), " has no CUDA kernel (2- and 4-byte types only)");
    if (es == 4)
      RZ_CUDA_CHECK(permute4_cuda(static_cast<const float*>(x.raw_data()),
                                  static_cast<float*>(y.raw_data()), dims, perm, op_stream()));
    else
      RZ_CUDA_CHECK(permute4_cuda(static_cast<const bf16*>(x.raw_data()),
                                  static_cast<bf16*>(y.raw_data()), dims, perm, op_stream()));
#else
    no_cuda_backend("permute");
#endif
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
