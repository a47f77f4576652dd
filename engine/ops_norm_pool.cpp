// Batch norm, the SE channel scale and pooling.
#include <cmath>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_cuda.h"
#include "kernels/cpu/batch_norm.h"
#include "kernels/cpu/channel_scale.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/sync_bn.h"
#include "engine/comm.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/channel_scale.cuh"
#include "kernels/cuda/pool.cuh"
#include "kernels/cuda/sync_bn.cuh"
#endif

namespace rz {

namespace {

// Argument checks shared by both devices. On the CPU the parameters and
// running statistics have x's dtype; on CUDA they are f32 (x f32 or bf16).
void check_batch_norm_args(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var,
                           const BatchNormOptions& opt, int64_t M, int64_t C) {
  auto check_param = [&](const Tensor& p, const char* what) {
    if (x.device().is_cpu()) {
      check_same(x, p, "batch_norm2d");
    } else {
      RZ_CHECK(p.defined() && p.dtype() == DType::F32 && p.device() == x.device(), "batch_norm2d: ",
               what, " must be f32 on ", x.device().str(), ", got ", p.defined() ? p.str() : "undefined");
    }
    check_shape(p, {C}, what);
  };
  check_param(gamma, "batch_norm2d weight");
  check_param(beta, "batch_norm2d bias");
  const bool track = running_mean.defined();
  RZ_CHECK(track == running_var.defined(), "batch_norm2d: running_mean and running_var must be "
                                           "given together");
  if (track) {
    check_param(running_mean, "batch_norm2d running_mean");
    check_param(running_var, "batch_norm2d running_var");
  }
  RZ_CHECK(opt.training || track, "batch_norm2d: eval mode needs running statistics");
  RZ_CHECK(!opt.training || M > 1, "batch_norm2d: training needs more than one value per "
                                   "channel, got input ", shape_str(x.shape()));
}

Tensor batch_norm2d_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                        const Tensor& running_mean, const Tensor& running_var,
                        const BatchNormOptions& opt, int64_t M, int64_t C) {
  const bool track = running_mean.defined();

  Tensor y = Tensor::empty_like(x);
  // Statistics used by backward: the batch's in training, the running ones in eval.
  Tensor mean = Tensor::empty({C}, x.dtype()), invstd = Tensor::empty({C}, x.dtype());
  dispatch_float(x.dtype(), "batch_norm2d", [&](auto tag) {
    using T = decltype(tag);
    if (opt.training) {
      Tensor rm = running_mean, rv = running_var;
      if (track) {
        rm.bump_version();
        rv.bump_version();
      }
      batch_norm_fwd_train_cpu(x.data<T>(), gamma.data<T>(), beta.data<T>(), y.data<T>(),
                               mean.data<T>(), invstd.data<T>(),
                               track ? rm.data<T>() : nullptr, track ? rv.data<T>() : nullptr,
                               M, C, opt.momentum, opt.eps);
    } else {
      batch_norm_fwd_eval_cpu(x.data<T>(), gamma.data<T>(), beta.data<T>(),
                              running_mean.data<T>(), running_var.data<T>(), y.data<T>(), M, C,
                              opt.eps);
      const T* rm = running_mean.data<T>();
      const T* rv = running_var.data<T>();
      T* pm = mean.data<T>();
      T* pi = invstd.data<T>();
      for (int64_t c = 0; c < C; ++c) {
        pm[c] = rm[c];
        pi[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(rv[c]) + opt.eps));
      }
    }
  });
  if (any_requires_grad({&x, &gamma, &beta})) {
    const bool need_x = x.requires_grad(), need_g = gamma.requires_grad(),
               need_b = beta.requires_grad();
    const bool training = opt.training;
    SavedTensor sx(x), sg(gamma);
    record_op(y, "batch_norm2d", {&x, &gamma, &beta},
              [sx, sg, mean, invstd, need_x, need_g, need_b, training, M, C](const Tensor& dy) {
                Tensor xs = sx.get("batch_norm2d"), gs = sg.get("batch_norm2d");
                std::vector<Tensor> grads(3);
                if (need_x) grads[0] = Tensor::empty_like(xs);
                if (need_g) grads[1] = Tensor::empty({C}, dy.dtype());
                if (need_b) grads[2] = Tensor::empty({C}, dy.dtype());
                dispatch_float(dy.dtype(), "batch_norm2d backward", [&](auto tag) {
                  using T = decltype(tag);
                  batch_norm_bwd_cpu(xs.data<T>(), dy.data<T>(), gs.data<T>(), mean.data<T>(),
                                     invstd.data<T>(), need_x ? grads[0].data<T>() : nullptr,
                                     need_g ? grads[1].data<T>() : nullptr,
                                     need_b ? grads[2].data<T>() : nullptr, M, C, training);
                });
                return grads;
              });
  }
  return y;
}

Tensor batch_norm2d_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var,
                         const BatchNormOptions& opt, int64_t M, int64_t C) {
#if defined(RZ_HAVE_CUDA)
  const bool track = running_mean.defined();
  Tensor y = Tensor::empty_like(x);
  // fp32 statistics for backward: the batch's in training, the running ones in eval.
  Tensor mean = Tensor::empty({C}, DType::F32, x.device());
  Tensor invstd = Tensor::empty({C}, DType::F32, x.device());
  dispatch_cuda_float(x.dtype(), "batch_norm2d", [&](auto tag) {
    using T = decltype(tag);
    if (opt.training) {
      Tensor rm = running_mean, rv = running_var;
      if (track) {
        rm.bump_version();
        rv.bump_version();
      }
      RZ_CUDA_CHECK(batch_norm_fwd_train_cuda(
          x.data<T>(), gamma.data<float>(), beta.data<float>(), y.data<T>(), mean.data<float>(),
          invstd.data<float>(), track ? rm.data<float>() : nullptr,
          track ? rv.data<float>() : nullptr, M, C, opt.momentum, opt.eps, op_stream()));
    } else {
      RZ_CUDA_CHECK(batch_norm_fwd_eval_cuda(x.data<T>(), gamma.data<float>(), beta.data<float>(),
                                             running_mean.data<float>(), running_var.data<float>(),
                                             y.data<T>(), M, C, opt.eps, op_stream()));
      RZ_CUDA_CHECK(batch_norm_eval_stats_cuda(running_mean.data<float>(),
                                               running_var.data<float>(), mean.data<float>(),
                                               invstd.data<float>(), C, opt.eps, op_stream()));
    }
  });
  if (any_requires_grad({&x, &gamma, &beta})) {
    const bool need_x = x.requires_grad(), need_g = gamma.requires_grad(),
               need_b = beta.requires_grad();
    const bool training = opt.training;
    SavedTensor sx(x), sg(gamma);
    record_op(y, "batch_norm2d", {&x, &gamma, &beta},
              [sx, sg, mean, invstd, need_x, need_g, need_b, training, M, C](const Tensor& dy) {
                Tensor xs = sx.get("batch_norm2d"), gs = sg.get("batch_norm2d");
                std::vector<Tensor> grads(3);
                if (need_x) grads[0] = Tensor::empty_like(xs);
                if (need_g) grads[1] = Tensor::empty({C}, DType::F32, dy.device());
                if (need_b) grads[2] = Tensor::empty({C}, DType::F32, dy.device());
                dispatch_cuda_float(dy.dtype(), "batch_norm2d backward", [&](auto tag) {
                  using T = decltype(tag);
                  RZ_CUDA_CHECK(batch_norm_bwd_cuda(
                      xs.data<T>(), dy.data<T>(), gs.data<float>(), mean.data<float>(),
                      invstd.data<float>(), need_x ? grads[0].data<T>() : nullptr,
                      need_g ? grads[1].data<float>() : nullptr,
                      need_b ? grads[2].data<float>() : nullptr, M, C, training, op_stream()));
                });
                return grads;
              });
  }
  return y;
#else
  (void)x, (void)gamma, (void)beta, (void)running_mean, (void)running_var, (void)opt, (void)M, (void)C;
  no_cuda_backend("batch_norm2d");
#endif
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var,
                    BatchNormOptions opt) {
  NvtxRange range("batch_norm2d");
  RZ_CHECK(x.defined(), "batch_norm2d: undefined input");
  RZ_CHECK(x.dim() >= 2, "batch_norm2d: input must be channels-last with rank >= 2, got ",
           x.str());
  const int64_t C = x.size(-1), M = x.numel() / std::max<int64_t>(C, 1);
  check_batch_norm_args(x, gamma, beta, running_mean, running_var, opt, M, C);
  if (x.device().is_cpu()) return batch_norm2d_cpu(x, gamma, beta, running_mean, running_var, opt, M, C);
  return batch_norm2d_cuda(x, gamma, beta, running_mean, running_var, opt, M, C);
}

Tensor sync_batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                         const Tensor& running_var, BatchNormOptions opt, Communicator& comm) {
  if (!opt.training) return batch_norm2d(x, gamma, beta, running_mean, running_var, opt);
  NvtxRange range("sync_batch_norm2d");
  RZ_CHECK(x.defined() && x.dim() >= 2, "sync_batch_norm2d: input must be channels-last with rank >= 2, got ",
           x.defined() ? x.str() : "undefined");
  const int64_t C = x.size(-1), M = x.numel() / std::max<int64_t>(C, 1);
  check_batch_norm_args(x, gamma, beta, running_mean, running_var, opt, M, C);
  RZ_CHECK(x.device().is_cpu() || comm.takes_cuda(), "sync_batch_norm2d: the ", comm.name(),
           " communicator takes no CUDA tensors (", x.str(), ")");
  const bool track = running_mean.defined();
  const Device dev = x.device();
  const DType pdt = gamma.dtype();  // x's dtype on the CPU, f32 on CUDA
  // Forward: this rank's sums, all-reduced (with the row count), then the
  // batch statistics of every rank's rows and the eval-form normalization.
  Tensor sums = Tensor::empty({2 * C + 1}, DType::F64, dev);
  Tensor mean = Tensor::empty({C}, pdt, dev), var = Tensor::empty({C}, pdt, dev);
  Tensor invstd = Tensor::empty({C}, pdt, dev), y = Tensor::empty_like(x);
  Tensor rm = running_mean, rv = running_var;
  if (track) {
    rm.bump_version();
    rv.bump_version();
  }
  on_device(x, "sync_batch_norm2d", [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    if constexpr (decltype(on_cpu)::value) {
      sync_bn_sums_cpu(x.data<T>(), M, C, sums.data<double>());
      comm.all_reduce_sum(sums);
      sync_bn_stats_cpu(sums.data<double>(), C, opt.momentum, mean.data<T>(), var.data<T>(),
                        track ? rm.data<T>() : nullptr, track ? rv.data<T>() : nullptr);
      batch_norm_fwd_eval_cpu(x.data<T>(), gamma.data<T>(), beta.data<T>(), mean.data<T>(), var.data<T>(),
                              y.data<T>(), M, C, opt.eps);
      for (int64_t c = 0; c < C; ++c)
        invstd.data<T>()[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var.data<T>()[c]) + opt.eps));
    } else {
      RZ_OP_CUDA(sync_bn_sums_cuda(x.data<T>(), M, C, sums.data<double>(), op_stream()));
      comm.all_reduce_sum(sums);
      RZ_OP_CUDA(sync_bn_stats_cuda(sums.data<double>(), C, opt.momentum, mean.data<float>(), var.data<float>(),
                                    track ? rm.data<float>() : nullptr, track ? rv.data<float>() : nullptr,
                                    op_stream()));
      RZ_OP_CUDA(batch_norm_fwd_eval_cuda(x.data<T>(), gamma.data<float>(), beta.data<float>(), mean.data<float>(),
                                          var.data<float>(), y.data<T>(), M, C, opt.eps, op_stream()));
      Tensor mean_copy = Tensor::empty({C}, DType::F32, dev);
      RZ_OP_CUDA(batch_norm_eval_stats_cuda(mean.data<float>(), var.data<float>(), mean_copy.data<float>(),
                                            invstd.data<float>(), C, opt.eps, op_stream()));
    }
  });
  if (!any_requires_grad({&x, &gamma, &beta})) return y;
  // Backward: this rank's sums of dy and dy * (x - mean) give its parameter
  // gradients; all-reduced, they give dx (the statistics depend on every
  // rank's rows).
  const bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
  SavedTensor sx(x), sg(gamma);
  Communicator* cp = &comm;
  record_op(y, "sync_batch_norm2d", {&x, &gamma, &beta},
            [sx, sg, mean, invstd, sums, need_x, need_g, need_b, M, C, cp](const Tensor& dy) {
              const Tensor xs = sx.get("sync_batch_norm2d"), gs = sg.get("sync_batch_norm2d");
              std::vector<Tensor> grads(3);
              Tensor g = Tensor::empty({2 * C}, DType::F64, dy.device());
              if (need_g) grads[1] = Tensor::empty({C}, gs.dtype(), dy.device());
              if (need_b) grads[2] = Tensor::empty({C}, gs.dtype(), dy.device());
              if (need_x) grads[0] = Tensor::empty_like(xs);
              on_device(dy, "sync_batch_norm2d backward", [&](auto tag, auto on_cpu) {
                using T = decltype(tag);
                if constexpr (decltype(on_cpu)::value) {
                  sync_bn_grad_sums_cpu(xs.data<T>(), dy.data<T>(), mean.data<T>(), M, C, g.data<double>());
                  sync_bn_param_grads_cpu(g.data<double>(), invstd.data<T>(), C,
                                          need_g ? grads[1].data<T>() : nullptr, need_b ? grads[2].data<T>() : nullptr);
                  if (!need_x) return;
                  cp->all_reduce_sum(g);
                  sync_bn_grad_input_cpu(xs.data<T>(), dy.data<T>(), gs.data<T>(), mean.data<T>(), invstd.data<T>(),
                                         g.data<double>(), sums.data<double>()[2 * C], M, C, grads[0].data<T>());
                } else {
                  RZ_OP_CUDA(sync_bn_grad_sums_cuda(xs.data<T>(), dy.data<T>(), mean.data<float>(), M, C,
                                                    g.data<double>(), op_stream()));
                  RZ_OP_CUDA(sync_bn_param_grads_cuda(g.data<double>(), invstd.data<float>(), C,
                                                      need_g ? grads[1].data<float>() : nullptr,
                                                      need_b ? grads[2].data<float>() : nullptr, op_stream()));
                  if (!need_x) return;
                  cp->all_reduce_sum(g);
                  RZ_OP_CUDA(sync_bn_grad_input_cuda(xs.data<T>(), dy.data<T>(), gs.data<float>(), mean.data<float>(),
                                                     invstd.data<float>(), g.data<double>(),
                                                     sums.data<double>() + 2 * C, M, C, grads[0].data<T>(),
                                                     op_stream()));
                }
              });
              return grads;
            });
  return y;
}

Tensor channel_scale(const Tensor& x, const Tensor& s) {
  NvtxRange range("channel_scale");
  check_same(x, s, "channel_scale");
  RZ_CHECK(x.dim() == 4, "channel_scale: input must be NHWC, got ", x.str());
  const int64_t N = x.size(0), HW = x.size(1) * x.size(2), C = x.size(3);
  RZ_CHECK(s.numel() == N * C && s.size(0) == N && s.size(-1) == C,
           "channel_scale: scale must be [N, C] or [N, 1, 1, C] = [", N, ", ", C, "], got ",
           shape_str(s.shape()));
  Tensor y = Tensor::empty_like(x);
  on_device(x, "channel_scale", [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    if constexpr (decltype(on_cpu)::value) channel_scale_fwd_cpu(x.data<T>(), s.data<T>(), y.data<T>(), N, HW, C);
    else RZ_OP_CUDA(channel_scale_fwd_cuda(x.data<T>(), s.data<T>(), y.data<T>(), N, HW, C, op_stream()));
  });
  if (any_requires_grad({&x, &s})) {
    const bool need_x = x.requires_grad(), need_s = s.requires_grad();
    SavedTensor sx(need_s ? x : Tensor()), ss(s);
    const Shape s_shape = s.shape();
    record_op(y, "channel_scale", {&x, &s},
              [sx, ss, need_x, need_s, s_shape, N, HW, C](const Tensor& dy) {
                Tensor xs = sx.get("channel_scale"), sv = ss.get("channel_scale");
                std::vector<Tensor> grads(2);
                if (need_x) grads[0] = Tensor::empty_like(dy);
                if (need_s) grads[1] = Tensor::empty(s_shape, dy.dtype(), dy.device());
                on_device(dy, "channel_scale backward", [&](auto tag, auto on_cpu) {
                  using T = decltype(tag);
                  const T* xp = need_s ? xs.data<T>() : nullptr;
                  T* dxp = need_x ? grads[0].data<T>() : nullptr;
                  T* dsp = need_s ? grads[1].data<T>() : nullptr;
                  if constexpr (decltype(on_cpu)::value) channel_scale_bwd_cpu(xp, sv.data<T>(), dy.data<T>(), dxp, dsp, N, HW, C);
                  else RZ_OP_CUDA(channel_scale_bwd_cuda(xp, sv.data<T>(), dy.data<T>(), dxp, dsp, N, HW, C, op_stream()));
                });
                return grads;
              });
  }
  return y;
}

namespace {
Pool2dGeom pool_geom(const Tensor& x, const Pool2dOptions& opt, const char* op) {
  RZ_CHECK(x.defined(), op, ": undefined input");
  RZ_CHECK(x.dim() == 4, op, ": input must be NHWC, got ", x.str());
  RZ_CHECK(opt.kernel >= 1 && opt.stride >= 1 && opt.padding >= 0 && 2 * opt.padding <= opt.kernel,
           op, ": kernel ", opt.kernel, " stride ", opt.stride, " padding ", opt.padding,
           " (padding must be at most half the kernel)");
  const Pool2dGeom g =
      make_pool2d_geom(x.size(0), x.size(1), x.size(2), x.size(3), opt.kernel, opt.kernel,
                       opt.stride, opt.stride, opt.padding, opt.padding, opt.ceil_mode);
  RZ_CHECK(g.OH >= 1 && g.OW >= 1, op, ": output would be empty for input ", x.str());
  return g;
}
}  // namespace

Tensor max_pool2d(const Tensor& x, Pool2dOptions opt) {
  NvtxRange range("max_pool2d");
  const Pool2dGeom g = pool_geom(x, opt, "max_pool2d");
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.C}, x.dtype(), x.device());
  // Window argmax per output element (index into the input plane), kept for
  // backward: int32 values in a byte tensor on the input's device.
  RZ_CHECK(g.H * g.W <= INT32_MAX, "max_pool2d: input plane too large: ", x.str());
  Tensor argmax = Tensor::empty({y.numel() * 4}, DType::U8, x.device());
  auto* am = static_cast<int32_t*>(argmax.raw_data());
  on_device(x, "max_pool2d", [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    if constexpr (decltype(on_cpu)::value) max_pool2d_fwd_cpu(x.data<T>(), y.data<T>(), am, g);
    else RZ_OP_CUDA(max_pool2d_fwd_cuda(x.data<T>(), y.data<T>(), am, g, op_stream()));
  });
  if (any_requires_grad({&x})) {
    record_op(y, "max_pool2d", {&x}, [argmax, g](const Tensor& dy) {
      Tensor dx = Tensor::empty({g.N, g.H, g.W, g.C}, dy.dtype(), dy.device());
      const auto* idx = static_cast<const int32_t*>(argmax.raw_data());
      on_device(dy, "max_pool2d backward", [&](auto tag, auto on_cpu) {
        using T = decltype(tag);
        if constexpr (decltype(on_cpu)::value) max_pool2d_bwd_cpu(dy.data<T>(), idx, dx.data<T>(), g);
        else RZ_OP_CUDA(max_pool2d_bwd_cuda(dy.data<T>(), idx, dx.data<T>(), g, op_stream()));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, Pool2dOptions opt) {
  NvtxRange range("avg_pool2d");
  const Pool2dGeom g = pool_geom(x, opt, "avg_pool2d");
  Tensor y = Tensor::empty({g.N, g.OH, g.OW, g.C}, x.dtype(), x.device());
  const bool include_pad = opt.count_include_pad;
  on_device(x, "avg_pool2d", [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    if constexpr (decltype(on_cpu)::value) avg_pool2d_fwd_cpu(x.data<T>(), y.data<T>(), g, include_pad);
    else RZ_OP_CUDA(avg_pool2d_fwd_cuda(x.data<T>(), y.data<T>(), g, include_pad, op_stream()));
  });
  if (any_requires_grad({&x})) {
    record_op(y, "avg_pool2d", {&x}, [g, include_pad](const Tensor& dy) {
      Tensor dx = Tensor::empty({g.N, g.H, g.W, g.C}, dy.dtype(), dy.device());
      on_device(dy, "avg_pool2d backward", [&](auto tag, auto on_cpu) {
        using T = decltype(tag);
        if constexpr (decltype(on_cpu)::value) avg_pool2d_bwd_cpu(dy.data<T>(), dx.data<T>(), g, include_pad);
        else RZ_OP_CUDA(avg_pool2d_bwd_cuda(dy.data<T>(), dx.data<T>(), g, include_pad, op_stream()));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  NvtxRange range("global_avg_pool");
  RZ_CHECK(x.defined(), "global_avg_pool: undefined input");
  RZ_CHECK(x.dim() == 4, "global_avg_pool: input must be NHWC, got ", x.str());
  const int64_t N = x.size(0), HW = x.size(1) * x.size(2), C = x.size(3);
  RZ_CHECK(HW > 0, "global_avg_pool: empty spatial extent in ", x.str());
  Tensor y = Tensor::empty({N, C}, x.dtype(), x.device());
  on_device(x, "global_avg_pool", [&](auto tag, auto on_cpu) {
    using T = decltype(tag);
    if constexpr (decltype(on_cpu)::value) global_avg_pool_fwd_cpu(x.data<T>(), y.data<T>(), N, HW, C);
    else RZ_OP_CUDA(global_avg_pool_fwd_cuda(x.data<T>(), y.data<T>(), N, HW, C, op_stream()));
  });
  if (any_requires_grad({&x})) {
    const Shape in_shape = x.shape();
    record_op(y, "global_avg_pool", {&x}, [in_shape, N, HW, C](const Tensor& dy) {
      Tensor dx = Tensor::empty(in_shape, dy.dtype(), dy.device());
      on_device(dy, "global_avg_pool backward", [&](auto tag, auto on_cpu) {
        using T = decltype(tag);
        if constexpr (decltype(on_cpu)::value) global_avg_pool_bwd_cpu(dy.data<T>(), dx.data<T>(), N, HW, C);
        else RZ_OP_CUDA(global_avg_pool_bwd_cuda(dy.data<T>(), dx.data<T>(), N, HW, C, op_stream()));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace rz
