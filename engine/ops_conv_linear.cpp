// conv2d and linear: the GEMM-shaped ops.
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"

namespace rz {

Tensor conv2d(const Tensor& x, const Tensor& w, Conv2dOptions opt) {
  check_same(x, w, "conv2d");
  check_cpu(x, "conv2d");
  RZ_CHECK(x.dim() == 4, "conv2d: input must be NHWC [N, H, W, C], got ", x.str());
  RZ_CHECK(w.dim() == 4, "conv2d: weight must be KRSC [K, R, S, C], got ", w.str());
  RZ_CHECK(w.size(3) == x.size(3), "conv2d: weight ", shape_str(w.shape()), " expects ",
           w.size(3), " input channels, input ", shape_str(x.shape()), " has ", x.size(3));
  RZ_CHECK(opt.stride >= 1 && opt.padding >= 0, "conv2d: stride ", opt.stride, " padding ",
           opt.padding);
  const Conv2dGeom g = make_conv2d_geom(x.size(0), x.size(1), x.size(2), x.size(3), w.size(0),
                                        w.size(1), w.size(2), opt.stride, opt.stride,
                                        opt.padding, opt.padding);
  RZ_CHECK(g.OH >= 1 && g.OW >= 1, "conv2d: kernel ", g.R, "x", g.S, " does not fit input ",
           shape_str(x.shape()), " with padding ", opt.padding);
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
  dispatch_float(x.dtype(), "conv2d", [&](auto tag) {
    using T = decltype(tag);
    conv2d_fwd_cpu(x.data<T>(), w.data<T>(), y.data<T>(), g);
  });
  if (any_requires_grad({&x, &w})) {
    const bool need_x = x.requires_grad(), need_w = w.requires_grad();
    SavedTensor sx(need_w ? x : Tensor()), sw(need_x ? w : Tensor());
    record_op(y, "conv2d", {&x, &w}, [sx, sw, g, need_x, need_w](const Tensor& dy) {
      std::vector<Tensor> grads(2);
      dispatch_float(dy.dtype(), "conv2d backward", [&](auto tag) {
        using T = decltype(tag);
        if (need_x) {
          Tensor wt = sw.get("conv2d");
          grads[0] = Tensor::empty({g.N, g.H, g.W, g.C}, dy.dtype(), dy.device());
          conv2d_bwd_data_cpu(dy.data<T>(), wt.data<T>(), grads[0].data<T>(), g);
        }
        if (need_w) {
          Tensor xt = sx.get("conv2d");
          grads[1] = Tensor::empty({g.K, g.R, g.S, g.C}, dy.dtype(), dy.device());
          conv2d_bwd_weight_cpu(xt.data<T>(), dy.data<T>(), grads[1].data<T>(), g);
        }
      });
      return grads;
    });
  }
  return y;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_same(x, w, "linear");
  check_cpu(x, "linear");
  RZ_CHECK(x.dim() == 2 && w.dim() == 2 && w.size(1) == x.size(1), "linear: input ", x.str(),
           " and weight ", w.str(), " (expected [N, in] and [out, in])");
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  if (b.defined()) {
    check_same(x, b, "linear");
    check_shape(b, {out}, "linear bias");
  }
  Tensor y = Tensor::empty({N, out}, x.dtype(), x.device());
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    linear_fwd_cpu(x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, y.data<T>(), N,
                   in, out);
  });
  if (any_requires_grad({&x, &w, &b})) {
    const bool need_x = x.requires_grad(), need_w = w.requires_grad();
    const bool need_b = b.defined() && b.requires_grad();
    SavedTensor sx(need_w ? x : Tensor()), sw(need_x ? w : Tensor());
    record_op(y, "linear", {&x, &w, &b},
              [sx, sw, need_x, need_w, need_b, N, in, out](const Tensor& dy) {
                Tensor xs = sx.get("linear"), ws = sw.get("linear");
                std::vector<Tensor> grads(3);
                if (need_x) grads[0] = Tensor::empty({N, in}, dy.dtype(), dy.device());
                if (need_w) grads[1] = Tensor::empty({out, in}, dy.dtype(), dy.device());
                if (need_b) grads[2] = Tensor::empty({out}, dy.dtype(), dy.device());
                dispatch_float(dy.dtype(), "linear backward", [&](auto tag) {
                  using T = decltype(tag);
                  auto ptr = [](Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
                  linear_bwd_cpu(need_w ? xs.data<T>() : nullptr, need_x ? ws.data<T>() : nullptr,
                                 dy.data<T>(), ptr(grads[0]), ptr(grads[1]), ptr(grads[2]), N, in,
                                 out);
                });
                return grads;
              });
  }
  return y;
}

}  // namespace rz
