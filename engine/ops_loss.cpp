// Losses: means over all elements, returned as one-element tensors of shape [].
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/cpu/loss.h"

namespace rz {

Tensor bce_with_logits(const Tensor& logits, const Tensor& targets, const Tensor& pos_weight) {
  check_same(logits, targets, "bce_with_logits");
  check_cpu(logits, "bce_with_logits");
  RZ_CHECK(logits.dim() == 2, "bce_with_logits: logits must be [N, L], got ", logits.str());
  check_shape(targets, logits.shape(), "bce_with_logits targets");
  const int64_t rows = logits.size(0), L = logits.size(1);
  RZ_CHECK(rows * L > 0, "bce_with_logits: empty input ", logits.str());
  if (pos_weight.defined()) {
    check_same(logits, pos_weight, "bce_with_logits");
    check_shape(pos_weight, {L}, "bce_with_logits pos_weight");
  }
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
  check_same(a, b, "mse_loss");
  check_cpu(a, "mse_loss");
  RZ_CHECK(a.shape() == b.shape(), "mse_loss: shape mismatch ", shape_str(a.shape()), " vs ",
           shape_str(b.shape()));
  RZ_CHECK(a.numel() > 0, "mse_loss: empty input ", a.str());
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
