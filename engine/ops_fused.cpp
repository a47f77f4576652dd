// Fused ops: several front-end ops in one autograd node over one kernel pair.
#include <algorithm>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/fused_bn.h"
#include "kernels/cpu/fused_se.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/fused_bn.cuh"
#include "kernels/cuda/fused_se.cuh"
#endif

namespace rz {

Tensor se_block_tail(const Tensor& t, const Tensor& shortcut, const Tensor& gamma,
                     const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                     const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                     BatchNormOptions opt, const Tensor& image_sums) {
  const char* op = "se_block_tail";
  NvtxRange range(op);
  check_same(t, shortcut, op);
  RZ_CHECK(t.dim() == 4 && t.shape() == shortcut.shape(), op, ": t ", t.str(), " and shortcut ",
           shortcut.str(), " must be the same NHWC shape");
  const int64_t N = t.size(0), HW = t.size(1) * t.size(2), C = t.size(3);
  RZ_CHECK(w1.dim() == 2 && w1.size(1) == C, op, ": w1 must be [rd, ", C, "], got ", w1.str());
  const int64_t rd = w1.size(0);
  const bool cuda = t.device().is_cuda();
  const DType pdt = cuda ? DType::F32 : t.dtype();  // parameter and saved-vector dtype
  const bool track = running_mean.defined();
  RZ_CHECK(track == running_var.defined() && (opt.training || track), op,
           ": running statistics must be given together, and are needed in eval mode");
  auto check_param = [&](const Tensor& p, const Shape& shape, const char* what) {
    RZ_CHECK(p.defined() && p.dtype() == pdt && p.device() == t.device(), op, ": ", what, " must be ",
             dtype_name(pdt), " on ", t.device().str(), ", got ", p.defined() ? p.str() : "undefined");
    check_shape(p, shape, what);
  };
  check_param(gamma, {C}, "bn weight");
  check_param(beta, {C}, "bn bias");
  if (track) {
    check_param(running_mean, {C}, "running_mean");
    check_param(running_var, {C}, "running_var");
  }
  check_param(w1, {rd, C}, "fc1 weight");
  check_param(b1, {rd}, "fc1 bias");
  check_param(w2, {C, rd}, "fc2 weight");
  check_param(b2, {C}, "fc2 bias");
  RZ_CHECK(!opt.training || N * HW > 1, op, ": training needs more than one value per channel");

  if (image_sums.defined())
    RZ_CHECK(image_sums.dtype() == DType::F64 && image_sums.device() == t.device() &&
                 image_sums.numel() == 2 * N * C,
             op, ": image sums must be f64 [2, ", N, ", ", C, "] on ", t.device().str(), ", got ",
             image_sums.str());
  const double* given_sums = image_sums.defined() ? image_sums.data<double>() : nullptr;
  const SeDims d{N, HW, C, rd};
  const FusedSeOptions fo{opt.training, opt.momentum, opt.eps};
  Tensor out = Tensor::empty_like(t);
  Tensor mean = Tensor::empty({C}, pdt, t.device()), invstd = Tensor::empty({C}, pdt, t.device());
  Tensor pooled = Tensor::empty({N, C}, pdt, t.device()), hidden = Tensor::empty({N, rd}, pdt, t.device());
  Tensor gate = Tensor::empty({N, C}, pdt, t.device());
  if (opt.training && track) {
    Tensor rm = running_mean, rv = running_var;
    rm.bump_version();
    rv.bump_version();
  }
  on_device(t, op, [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    using P = std::conditional_t<decltype(on_cpu)::value, T, float>;
    const SeWeights<P> w{gamma.data<P>(), beta.data<P>(), w1.data<P>(), b1.data<P>(), w2.data<P>(), b2.data<P>()};
    const SeSaved<P> sv{mean.data<P>(), invstd.data<P>(), pooled.data<P>(), hidden.data<P>(), gate.data<P>()};
    P* rm = track ? const_cast<P*>(running_mean.data<P>()) : nullptr;
    P* rv = track ? const_cast<P*>(running_var.data<P>()) : nullptr;
    if constexpr (decltype(on_cpu)::value)
      fused_se_fwd_cpu(t.data<T>(), shortcut.data<T>(), w, out.data<T>(), sv, rm, rv, d, fo, given_sums);
    else
      RZ_OP_CUDA(fused_se_fwd_cuda(t.data<T>(), shortcut.data<T>(), w, out.data<T>(), sv, rm, rv, d, fo,
                                   given_sums, op_stream()));
  });
  if (any_requires_grad({&t, &shortcut, &gamma, &beta, &w1, &b1, &w2, &b2})) {
    SavedTensor st(t), so(out), sg(gamma), sb(beta), sw1(w1), sb1(b1), sw2(w2), sb2(b2);
    const std::array<bool, 8> need{t.requires_grad(),  shortcut.requires_grad(), gamma.requires_grad(),
                                   beta.requires_grad(), w1.requires_grad(),     b1.requires_grad(),
                                   w2.requires_grad(),   b2.requires_grad()};
    record_op(out, op, {&t, &shortcut, &gamma, &beta, &w1, &b1, &w2, &b2},
              [=](const Tensor& dout) {
                const Tensor tv = st.get(op), ov = so.get(op);
                const Tensor gv = sg.get(op), bv = sb.get(op), w1v = sw1.get(op), b1v = sb1.get(op),
                             w2v = sw2.get(op), b2v = sb2.get(op);
                std::vector<Tensor> g(8);
                // dt and dshortcut are always computed (the kernel writes both).
                g[0] = Tensor::empty_like(tv);
                g[1] = Tensor::empty_like(tv);
                const Tensor* like[8] = {nullptr, nullptr, &gv, &bv, &w1v, &b1v, &w2v, &b2v};
                for (int i = 2; i < 8; ++i)
                  if (need[static_cast<size_t>(i)]) g[static_cast<size_t>(i)] = Tensor::empty_like(*like[i]);
                on_device(dout, "se_block_tail backward", [&](auto tag, auto on_cpu) {
                  using T = decltype(tag);
                  using P = std::conditional_t<decltype(on_cpu)::value, T, float>;
                  auto ptr = [&](int i) { return g[static_cast<size_t>(i)].defined() ? g[static_cast<size_t>(i)].data<P>() : nullptr; };
                  const SeWeights<P> w{gv.data<P>(), bv.data<P>(), w1v.data<P>(), b1v.data<P>(), w2v.data<P>(), b2v.data<P>()};
                  const SeSaved<const P> sv{mean.data<P>(), invstd.data<P>(), pooled.data<P>(), hidden.data<P>(), gate.data<P>()};
                  const SeGrads<P> gr{ptr(2), ptr(3), ptr(4), ptr(5), ptr(6), ptr(7)};
                  if constexpr (decltype(on_cpu)::value)
                    fused_se_bwd_cpu(tv.data<T>(), ov.data<T>(), dout.data<T>(), w, sv, g[0].data<T>(),
                                     g[1].data<T>(), gr, d, fo);
                  else
                    RZ_OP_CUDA(fused_se_bwd_cuda(tv.data<T>(), ov.data<T>(), dout.data<T>(), w, sv,
                                                 g[0].data<T>(), g[1].data<T>(), gr, d, fo, op_stream()));
                });
                if (!need[0]) g[0] = Tensor();
                if (!need[1]) g[1] = Tensor();
                return g;
              });
  }
  return out;
}

Tensor batch_norm_act(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                      const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                      BatchNormOptions opt, bool relu, const Tensor& batch_sums) {
  const char* op = "batch_norm_act";
  NvtxRange range(op);
  RZ_CHECK(x.defined() && x.dim() >= 2, op, ": input must be channels-last with rank >= 2");
  if (residual.defined()) {
    check_same(x, residual, op);
    RZ_CHECK(residual.shape() == x.shape(), op, ": residual ", residual.str(), " vs input ", x.str());
  }
  const int64_t C = x.size(-1), M = x.numel() / std::max<int64_t>(C, 1);
  const bool cuda = x.device().is_cuda();
  const DType pdt = cuda ? DType::F32 : x.dtype();
  const bool track = running_mean.defined();
  RZ_CHECK(track == running_var.defined() && (opt.training || track), op,
           ": running statistics must be given together, and are needed in eval mode");
  RZ_CHECK(!opt.training || M > 1, op, ": training needs more than one value per channel");
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var}) {
    if (!p->defined() && (p == &running_mean || p == &running_var)) continue;
    RZ_CHECK(p->defined() && p->dtype() == pdt && p->device() == x.device(), op,
             ": parameters and running statistics must be ", dtype_name(pdt), " on ", x.device().str());
    check_shape(*p, {C}, op);
  }
  if (batch_sums.defined()) {
    RZ_CHECK(opt.training, op, ": batch sums are for training mode");
    RZ_CHECK(batch_sums.dtype() == DType::F64 && batch_sums.device() == x.device() &&
                 batch_sums.numel() == 2 * C,
             op, ": batch sums must be f64 [2, ", C, "] on ", x.device().str(), ", got ",
             batch_sums.str());
  }
  const double* sums = batch_sums.defined() ? batch_sums.data<double>() : nullptr;
  const FusedBnOptions fo{opt.training, relu, opt.momentum, opt.eps};
  Tensor y = Tensor::empty_like(x);
  Tensor mean = Tensor::empty({C}, pdt, x.device()), invstd = Tensor::empty({C}, pdt, x.device());
  if (opt.training && track) {
    Tensor rm = running_mean, rv = running_var;
    rm.bump_version();
    rv.bump_version();
  }
  on_device(x, op, [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    using P = std::conditional_t<decltype(on_cpu)::value, T, float>;
    const T* res = residual.defined() ? residual.data<T>() : nullptr;
    P* rm = track ? const_cast<P*>(running_mean.data<P>()) : nullptr;
    P* rv = track ? const_cast<P*>(running_var.data<P>()) : nullptr;
    if constexpr (decltype(on_cpu)::value)
      fused_bn_fwd_cpu(x.data<T>(), res, gamma.data<P>(), beta.data<P>(), y.data<T>(), mean.data<P>(),
                       invstd.data<P>(), rm, rv, M, C, fo, sums);
    else
      RZ_OP_CUDA(fused_bn_fwd_cuda(x.data<T>(), res, gamma.data<P>(), beta.data<P>(), y.data<T>(),
                                   mean.data<P>(), invstd.data<P>(), rm, rv, M, C, fo, sums, op_stream()));
  });
  if (any_requires_grad({&x, &residual, &gamma, &beta})) {
    const bool need_x = x.requires_grad(), need_r = residual.defined() && residual.requires_grad(),
               need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    SavedTensor sx(x), sy(relu ? y : Tensor()), sg(gamma);
    record_op(y, op, {&x, &residual, &gamma, &beta}, [=](const Tensor& dy) {
      const Tensor xv = sx.get(op), yv = sy.get(op), gv = sg.get(op);
      std::vector<Tensor> g(4);
      if (need_x) g[0] = Tensor::empty_like(xv);
      if (need_r) g[1] = Tensor::empty_like(xv);
      if (need_g) g[2] = Tensor::empty_like(gv);
      if (need_b) g[3] = Tensor::empty_like(gv);
      on_device(dy, "batch_norm_act backward", [&](auto tag, auto on_cpu) {
        using T = decltype(tag);
        using P = std::conditional_t<decltype(on_cpu)::value, T, float>;
        T* dx = need_x ? g[0].data<T>() : nullptr;
        T* dr = need_r ? g[1].data<T>() : nullptr;
        P* dg = need_g ? g[2].data<P>() : nullptr;
        P* db = need_b ? g[3].data<P>() : nullptr;
        const T* yp = relu ? yv.data<T>() : nullptr;
        if constexpr (decltype(on_cpu)::value)
          fused_bn_bwd_cpu(xv.data<T>(), yp, dy.data<T>(), gv.data<P>(), mean.data<P>(), invstd.data<P>(),
                           dx, dr, dg, db, M, C, fo);
        else
          RZ_OP_CUDA(fused_bn_bwd_cuda(xv.data<T>(), yp, dy.data<T>(), gv.data<P>(), mean.data<P>(),
                                       invstd.data<P>(), dx, dr, dg, db, M, C, fo, op_stream()));
      });
      return g;
    });
  }
  return y;
}

}  // namespace rz
