// Losses: means over all elements, returned as one-element tensors of shape [].
// CPU: loss and gradient in two passes (forward, then backward on demand).
// CUDA: one fused pass computes the loss and, when a gradient will be needed,
// the gradient of the mean as well (kernels/cuda/loss.cuh); backward then only
// scales the saved gradient by the upstream device scalar, with no host sync.
// On CUDA the loss is f32 whatever the input dtype, and targets are f32.
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/loss.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/loss.cuh"
#include "kernels/cuda/reduce.cuh"
#endif

namespace rz {

namespace {

#if defined(RZ_HAVE_CUDA)
// Backward of a fused CUDA loss: each saved d(mean)/d(input) times the
// upstream gradient g (a one-element device tensor).
std::vector<Tensor> scale_saved_grads(const std::vector<Tensor>& saved, const Tensor& g) {
  std::vector<Tensor> out(saved.size());
  const Tensor gf = g.to(DType::F32);
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!saved[i].defined()) continue;
    out[i] = Tensor::empty_like(saved[i]);
    dispatch_cuda_float(saved[i].dtype(), "loss backward", [&](auto tag) {
      using T = decltype(tag);
      RZ_CUDA_CHECK(scale_by_scalar_cuda(saved[i].data<T>(), gf.data<float>(), out[i].data<T>(),
                                         saved[i].numel(), op_stream()));
    });
  }
  return out;
}

Tensor bce_with_logits_cuda_op(const Tensor& logits, const Tensor& targets,
                               const Tensor& pos_weight, int64_t rows, int64_t L) {
  const Tensor t32 = targets.to(DType::F32);
  RZ_CHECK(!pos_weight.defined() || pos_weight.dtype() == DType::F32,
           "bce_with_logits: pos_weight must be f32 on CUDA, got ", pos_weight.str());
  const bool need = any_requires_grad({&logits});
  Tensor out = Tensor::empty({}, DType::F32, logits.device());
  Tensor dl = need ? Tensor::empty_like(logits) : Tensor();
  dispatch_cuda_float(logits.dtype(), "bce_with_logits", [&](auto tag) {
    using T = decltype(tag);
    RZ_CUDA_CHECK(bce_with_logits_cuda(
        logits.data<T>(), t32.data<float>(), pos_weight.defined() ? pos_weight.data<float>() : nullptr,
        need ? dl.data<T>() : nullptr, 1.0f, out.data<float>(), rows, L, op_stream()));
  });
  if (need)
    record_op(out, "bce_with_logits", {&logits},
              [dl](const Tensor& g) { return scale_saved_grads({dl}, g); });
  return out;
}

Tensor mse_loss_cuda_op(const Tensor& a, const Tensor& b) {
  const bool need_a = a.requires_grad() && grad_enabled(), need_b = b.requires_grad() && grad_enabled();
  Tensor out = Tensor::empty({}, DType::F32, a.device());
  Tensor da = need_a ? Tensor::empty_like(a) : Tensor();
  Tensor db = need_b ? Tensor::empty_like(b) : Tensor();
  dispatch_cuda_float(a.dtype(), "mse_loss", [&](auto tag) {
    using T = decltype(tag);
    RZ_CUDA_CHECK(mse_cuda(a.data<T>(), b.data<T>(), need_a ? da.data<T>() : nullptr,
                           need_b ? db.data<T>() : nullptr, 1.0f, out.data<float>(), a.numel(),
                           op_stream()));
  });
  if (any_requires_grad({&a, &b}))
    record_op(out, "mse_loss", {&a, &b},
              [da, db](const Tensor& g) { return scale_saved_grads({da, db}, g); });
  return out;
}
#else
Tensor bce_with_logits_cuda_op(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t) {
  no_cuda_backend("bce_with_logits");
}
Tensor mse_loss_cuda_op(const Tensor&, const Tensor&) { no_cuda_backend("mse_loss"); }
#endif

}  // namespace

Tensor bce_with_logits(const Tensor& logits, const Tensor& targets, const Tensor& pos_weight) {
  NvtxRange range("bce_with_logits");
  RZ_CHECK(logits.defined() && targets.defined(), "bce_with_logits: undefined input");
  RZ_CHECK(logits.dim() == 2, "bce_with_logits: logits must be [N, L], got ", logits.str());
  check_shape(targets, logits.shape(), "bce_with_logits targets");
  const int64_t rows = logits.size(0), L = logits.size(1);
  RZ_CHECK(rows * L > 0, "bce_with_logits: empty input ", logits.str());
  if (pos_weight.defined()) check_shape(pos_weight, {L}, "bce_with_logits pos_weight");
  if (logits.device().is_cuda()) {
    RZ_CHECK(targets.device() == logits.device() &&
                 (!pos_weight.defined() || pos_weight.device() == logits.device()),
             "bce_with_logits: device mismatch: logits ", logits.str(), ", targets ", targets.str());
    return bce_with_logits_cuda_op(logits, targets, pos_weight, rows, L);
  }
  check_same(logits, targets, "bce_with_logits");
  if (pos_weight.defined()) check_same(logits, pos_weight, "bce_with_logits");
  const double loss = dispatch_float(logits.dtype(), "bce_with_logits", [&](auto tag) {
    using T = decltype(tag);
    return bce_with_logits_fwd_cpu(logits.data<T>(), targets.data<T>(),
                                   pos_weight.defined() ? pos_weight.data<T>() : nullptr, rows, L);
  });
  Tensor out = Tensor::full({}, loss, logits.dtype(), logits.device());
  if (any_requires_grad({&logits})) {
    SavedTensor sl(logits), st(targets), sp(pos_weight);
    record_op(out, "bce_with_logits", {&logits}, [sl, st, sp, rows, L](const Tensor& g) {
      Tensor lg = sl.get("bce_with_logits"), tg = st.get("bce_with_logits"),
             pw = sp.get("bce_with_logits");
      Tensor dl = Tensor::empty_like(lg);
      dispatch_float(g.dtype(), "bce_with_logits backward", [&](auto tag) {
        using T = decltype(tag);
        bce_with_logits_bwd_cpu(lg.data<T>(), tg.data<T>(), pw.defined() ? pw.data<T>() : nullptr,
                                static_cast<T>(g.item()), dl.data<T>(), rows, L);
      });
      return std::vector<Tensor>{dl};
    });
  }
  return out;
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  NvtxRange range("mse_loss");
  check_same(a, b, "mse_loss");
  RZ_CHECK(a.shape() == b.shape(), "mse_loss: shape mismatch ", shape_str(a.shape()), " vs ",
           shape_str(b.shape()));
  RZ_CHECK(a.numel() > 0, "mse_loss: empty input ", a.str());
  if (a.device().is_cuda()) return mse_loss_cuda_op(a, b);
  const int64_t n = a.numel();
  const double loss = dispatch_float(a.dtype(), "mse_loss", [&](auto tag) {
    using T = decltype(tag);
    return mse_fwd_cpu(a.data<T>(), b.data<T>(), n);
  });
  Tensor out = Tensor::full({}, loss, a.dtype(), a.device());
  if (any_requires_grad({&a, &b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    SavedTensor sa(a), sb(b);
    record_op(out, "mse_loss", {&a, &b}, [sa, sb, need_a, need_b, n](const Tensor& g) {
      Tensor av = sa.get("mse_loss"), bv = sb.get("mse_loss");
      std::vector<Tensor> grads(2);
      if (need_a) grads[0] = Tensor::empty_like(av);
      if (need_b) grads[1] = Tensor::empty_like(bv);
      dispatch_float(g.dtype(), "mse_loss backward", [&](auto tag) {
        using T = decltype(tag);
        mse_bwd_cpu(av.data<T>(), bv.data<T>(), static_cast<T>(g.item()),
                    need_a ? grads[0].data<T>() : nullptr, need_b ? grads[1].data<T>() : nullptr,
                    n);
      });
      return grads;
    });
  }
  return out;
}

}  // namespace rz
