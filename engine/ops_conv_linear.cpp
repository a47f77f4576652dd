// conv2d and linear: the GEMM-shaped ops. CPU: im2col + our GEMM; CUDA:
// cuDNN convolutions (algorithms measured and cached per shape, see
// engine/cuda_conv.h) or our native kernels (engine/conv_autotune.h), and
// cuBLAS GEMMs, f32 or bf16 with fp32 accumulation.
#include <vector>

#include "engine/autograd.h"
#include "engine/conv_autotune.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/common/bn_math.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"
#if defined(RZ_HAVE_CUDA)
#include "engine/cuda_conv.h"
#include "engine/cuda_gemm.h"
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/reduce.cuh"
#endif

namespace rz {

namespace {

// One convolution pass on the device of the tensors: out = fwd(a=x, b=w),
// dgrad(a=dy, b=w) or wgrad(a=x, b=dy).
void conv_pass(ConvPass pass, const Conv2dGeom& g, const Tensor& a, const Tensor& b, Tensor& out) {
  if (out.device().is_cpu()) {
    dispatch_float(out.dtype(), "conv2d", [&](auto tag) {
      using T = decltype(tag);
      switch (pass) {
        case ConvPass::Fwd: conv2d_fwd_cpu(a.data<T>(), b.data<T>(), out.data<T>(), g); break;
        case ConvPass::Dgrad: conv2d_bwd_data_cpu(a.data<T>(), b.data<T>(), out.data<T>(), g); break;
        case ConvPass::Wgrad: conv2d_bwd_weight_cpu(a.data<T>(), b.data<T>(), out.data<T>(), g); break;
      }
    });
    return;
  }
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(out.dtype() == DType::F32 || out.dtype() == DType::BF16, "conv2d: ", out.str(),
           " on CUDA (expected f32 or bf16)");
  CudaContext& ctx = op_context(out);
  // cuDNN, or one of our native kernels when --conv-impl asks for them
  // (engine/conv_autotune.h).
  const ConvPlan plan = conv_plan(ctx, g, out.dtype(), pass);
  conv_run(ctx, plan, g, out.dtype(), pass, a.raw_data(), b.raw_data(), out.raw_data());
#else
  (void)g, (void)a, (void)b, (void)pass;
  no_cuda_backend("conv2d");
#endif
}

}  // namespace

namespace {

// Checks the operands of a convolution and returns its geometry.
Conv2dGeom conv_geometry(const Tensor& x, const Tensor& w, Conv2dOptions opt, const char* op) {
  check_same(x, w, op);
  RZ_CHECK(x.dim() == 4, op, ": input must be NHWC [N, H, W, C], got ", x.str());
  RZ_CHECK(w.dim() == 4, op, ": weight must be KRSC [K, R, S, C], got ", w.str());
  RZ_CHECK(w.size(3) == x.size(3), op, ": weight ", shape_str(w.shape()), " expects ", w.size(3),
           " input channels, input ", shape_str(x.shape()), " has ", x.size(3));
  RZ_CHECK(opt.stride >= 1 && opt.padding >= 0, op, ": stride ", opt.stride, " padding ",
           opt.padding);
  const Conv2dGeom g = make_conv2d_geom(x.size(0), x.size(1), x.size(2), x.size(3), w.size(0),
                                        w.size(1), w.size(2), opt.stride, opt.stride,
                                        opt.padding, opt.padding);
  RZ_CHECK(g.OH >= 1 && g.OW >= 1, op, ": kernel ", g.R, "x", g.S, " does not fit input ",
           shape_str(x.shape()), " with padding ", opt.padding);
  return g;
}

// Makes y = conv(x, w) an autograd node (when a gradient is wanted).
void record_conv2d(Tensor& y, const Tensor& x, const Tensor& w, const Conv2dGeom& g) {
  if (!any_requires_grad({&x, &w})) return;
  const bool need_x = x.requires_grad(), need_w = w.requires_grad();
  SavedTensor sx(need_w ? x : Tensor()), sw(need_x ? w : Tensor());
  record_op(y, "conv2d", {&x, &w}, [sx, sw, g, need_x, need_w](const Tensor& dy) {
    std::vector<Tensor> grads(2);
    if (need_x) {
      grads[0] = Tensor::empty({g.N, g.H, g.W, g.C}, dy.dtype(), dy.device());
      conv_pass(ConvPass::Dgrad, g, dy, sw.get("conv2d"), grads[0]);
    }
    if (need_w) {
      grads[1] = Tensor::empty({g.K, g.R, g.S, g.C}, dy.dtype(), dy.device());
      conv_pass(ConvPass::Wgrad, g, sx.get("conv2d"), dy, grads[1]);
    }
    return grads;
  });
}

#if defined(RZ_HAVE_CUDA)
// This layer's plan for `fusion`: native (an epilogue can run) only for a
// CUDA f32/bf16 input whose plan picks a native kernel; cuDNN (variant 0)
// otherwise.
ConvPlan fusion_plan(const Tensor& x, const Conv2dGeom& g, ConvFusion fusion) {
  if (!x.device().is_cuda() || (x.dtype() != DType::F32 && x.dtype() != DType::BF16)) return {};
  return conv_plan(op_context(x), g, x.dtype(), ConvPass::Fwd, fusion);
}

// The forward convolution by a native plan with epilogue f into a new y;
// undefined when every native variant refused (nothing enqueued).
Tensor conv_fused_forward(const Tensor& x, const Tensor& w, const Conv2dGeom& g,
                          const ConvPlan& plan, const ConvFwdFusion& f) {
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
  if (!conv_run_fused(op_context(x), plan, g, x.dtype(), x.raw_data(), w.raw_data(), y.raw_data(), f))
    return Tensor();
  return y;
}

// Eval: conv with the folded BN (+ ReLU) in its epilogue, or undefined.
Tensor conv_bn_eval_epilogue(const Tensor& x, const Tensor& w, const Conv2dGeom& g,
                             const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, double eps, bool relu) {
  const ConvPlan plan = fusion_plan(x, g, ConvFusion::BnEval);
  if (!plan.native()) return Tensor();
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var}) {
    RZ_CHECK(p->defined() && p->dtype() == DType::F32 && p->device() == x.device(),
             "conv_bn_act: BN parameters and running statistics must be f32 on ", x.device().str());
    check_shape(*p, {g.K}, "conv_bn_act");
  }
  Tensor scale = Tensor::empty({g.K}, DType::F32, x.device());
  Tensor shift = Tensor::empty({g.K}, DType::F32, x.device());
  RZ_CUDA_CHECK(bn_fold_cuda(gamma.data<float>(), beta.data<float>(), running_mean.data<float>(),
                             running_var.data<float>(), scale.data<float>(), shift.data<float>(),
                             g.K, eps, op_stream()));
  ConvFwdFusion f;
  f.scale = scale.data<float>();
  f.shift = shift.data<float>();
  f.relu = relu;
  return conv_fused_forward(x, w, g, plan, f);
}
#endif

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w_in, Conv2dOptions opt) {
  NvtxRange range("conv2d");
  const Tensor w = weight_for(x, w_in, "conv2d");
  const Conv2dGeom g = conv_geometry(x, w, opt, "conv2d");
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
  conv_pass(ConvPass::Fwd, g, x, w, y);
  record_conv2d(y, x, w, g);
  return y;
}

ConvWithSums conv2d_with_sums(const Tensor& x, const Tensor& w_in, Conv2dOptions opt,
                              int64_t segments) {
  NvtxRange range("conv2d_with_sums");
  const Tensor w = weight_for(x, w_in, "conv2d");
  const Conv2dGeom g = conv_geometry(x, w, opt, "conv2d");
  RZ_CHECK(segments >= 1 && (g.N * g.OH * g.OW) % segments == 0, "conv2d_with_sums: ",
           segments, " segments do not divide the ", g.N * g.OH * g.OW, " output rows");
  ConvWithSums r;
#if defined(RZ_HAVE_CUDA)
  if (const ConvPlan plan = fusion_plan(x, g, ConvFusion::BnStats); plan.native()) {
    Tensor sums = Tensor::empty({2, segments, g.K}, DType::F64, x.device());
    ConvFwdFusion f;
    f.sums = sums.data<double>();
    f.segments = segments;
    r.y = conv_fused_forward(x, w, g, plan, f);
    if (r.y.defined()) r.sums = sums;
  }
#endif
  if (!r.y.defined()) {
    r.y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
    conv_pass(ConvPass::Fwd, g, x, w, r.y);
  }
  record_conv2d(r.y, x, w, g);
  return r;
}

Tensor conv_bn_act(const Tensor& x, const Tensor& w_in, Conv2dOptions copt, const Tensor& residual,
                   const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                   const Tensor& running_var, BatchNormOptions opt, bool relu) {
  NvtxRange range("conv_bn_act");
  if (opt.training) {
    const ConvWithSums c = conv2d_with_sums(x, w_in, copt, 1);
    return batch_norm_act(c.y, residual, gamma, beta, running_mean, running_var, opt, relu, c.sums);
  }
  const Tensor w = weight_for(x, w_in, "conv_bn_act");
  const Conv2dGeom g = conv_geometry(x, w, copt, "conv_bn_act");
#if defined(RZ_HAVE_CUDA)
  if (!residual.defined() && !any_requires_grad({&x, &w, &gamma, &beta})) {
    Tensor y = conv_bn_eval_epilogue(x, w, g, gamma, beta, running_mean, running_var, opt.eps, relu);
    if (y.defined()) return y;
  }
#endif
  if (x.device().is_cpu() && !residual.defined() && !any_requires_grad({&x, &w, &gamma, &beta})) {
    // The eval BN folded into a per-channel scale and shift that the GEMM
    // applies, with the ReLU, as it finishes each output tile: no BN pass.
    for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var}) {
      check_same(x, *p, "conv_bn_act");
      check_shape(*p, {g.K}, "conv_bn_act");
    }
    Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
    dispatch_float(x.dtype(), "conv_bn_act", [&](auto tag) {
      using T = decltype(tag);
      std::vector<T> scale(static_cast<size_t>(g.K)), shift(static_cast<size_t>(g.K));
      for (int64_t k = 0; k < g.K; ++k) {
        const BnFold f = bn_fold(static_cast<double>(gamma.data<T>()[k]), static_cast<double>(beta.data<T>()[k]),
                                 static_cast<double>(running_mean.data<T>()[k]),
                                 static_cast<double>(running_var.data<T>()[k]), opt.eps);
        scale[static_cast<size_t>(k)] = static_cast<T>(f.scale);
        shift[static_cast<size_t>(k)] = static_cast<T>(f.shift);
      }
      const GemmEpilogue<T> ep{scale.data(), shift.data(), relu};
      conv2d_fwd_cpu(x.data<T>(), w.data<T>(), y.data<T>(), g, &ep);
    });
    return y;
  }
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.K}, x.dtype(), x.device());
  conv_pass(ConvPass::Fwd, g, x, w, y);
  record_conv2d(y, x, w, g);
  return batch_norm_act(y, residual, gamma, beta, running_mean, running_var, opt, relu);
}

namespace {

#if defined(RZ_HAVE_CUDA)
// Row-major GEMM on the tensors' device: C[M,N] = op(A) op(B), overwriting C.
void gemm_device(const Tensor& A, bool ta, const Tensor& B, bool tb, Tensor& C, int64_t M,
                 int64_t N, int64_t K) {
  CudaContext& ctx = op_context(C);
  CublasGemmOptions o;
  o.allow_tf32 = ctx.options.allow_tf32;
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  gemm_cublas(ctx, A.dtype(), C.dtype(), ta, tb, M, N, K, 1.0f, A.raw_data(), lda, B.raw_data(),
              ldb, 0.0f, C.raw_data(), N, o);
}
#endif

// linear forward on CUDA: y = x w^T (+ b, fp32 bias added in fp32).
void linear_fwd_device(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
#if defined(RZ_HAVE_CUDA)
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  gemm_device(x, false, w, true, y, N, out, in);
  if (b.defined())
    dispatch_cuda_float(y.dtype(), "linear", [&](auto tag) {
      using T = decltype(tag);
      RZ_CUDA_CHECK(bias_add_cuda(y.data<T>(), b.data<float>(), N, out, op_stream()));
    });
#else
  (void)x, (void)w, (void)b, (void)y;
  no_cuda_backend("linear");
#endif
}

// linear backward on CUDA: dx = dy w, dw = dy^T x, db = column sums of dy (fp32).
void linear_bwd_device(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                       Tensor& db) {
#if defined(RZ_HAVE_CUDA)
  const int64_t N = dy.size(0), out = dy.size(1);
  if (dx.defined()) gemm_device(dy, false, w, false, dx, N, dx.size(1), out);
  if (dw.defined()) gemm_device(dy, true, x, false, dw, out, dw.size(1), N);
  if (db.defined())
    dispatch_cuda_float(dy.dtype(), "linear backward", [&](auto tag) {
      using T = decltype(tag);
      RZ_CUDA_CHECK(col_sum_cuda(dy.data<T>(), N, out, db.data<float>(), op_stream()));
    });
#else
  (void)x, (void)w, (void)dy, (void)dx, (void)dw, (void)db;
  no_cuda_backend("linear backward");
#endif
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w_in, const Tensor& b) {
  NvtxRange range("linear");
  const Tensor w = weight_for(x, w_in, "linear");
  check_same(x, w, "linear");
  RZ_CHECK(x.dim() == 2 && w.dim() == 2 && w.size(1) == x.size(1), "linear: input ", x.str(),
           " and weight ", w.str(), " (expected [N, in] and [out, in])");
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  const bool cuda = x.device().is_cuda();
  if (b.defined()) {
    if (cuda) {
      RZ_CHECK(b.dtype() == DType::F32 && b.device() == x.device(), "linear: bias ", b.str(),
               " must be f32 on ", x.device().str());
    } else {
      check_same(x, b, "linear");
    }
    check_shape(b, {out}, "linear bias");
  }
  Tensor y = Tensor::empty({N, out}, x.dtype(), x.device());
  if (cuda) {
    linear_fwd_device(x, w, b, y);
  } else {
    dispatch_float(x.dtype(), "linear", [&](auto tag) {
      using T = decltype(tag);
      linear_fwd_cpu(x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, y.data<T>(),
                     N, in, out);
    });
  }
  if (any_requires_grad({&x, &w, &b})) {
    const bool need_x = x.requires_grad(), need_w = w.requires_grad();
    const bool need_b = b.defined() && b.requires_grad();
    const DType b_dtype = b.defined() ? b.dtype() : x.dtype();
    SavedTensor sx(need_w ? x : Tensor()), sw(need_x ? w : Tensor());
    record_op(y, "linear", {&x, &w, &b},
              [sx, sw, need_x, need_w, need_b, b_dtype, N, in, out](const Tensor& dy) {
                Tensor xs = sx.get("linear"), ws = sw.get("linear");
                std::vector<Tensor> grads(3);
                if (need_x) grads[0] = Tensor::empty({N, in}, dy.dtype(), dy.device());
                if (need_w) grads[1] = Tensor::empty({out, in}, dy.dtype(), dy.device());
                if (need_b) grads[2] = Tensor::empty({out}, b_dtype, dy.device());
                if (dy.device().is_cuda()) {
                  linear_bwd_device(xs, ws, dy, grads[0], grads[1], grads[2]);
                  return grads;
                }
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
