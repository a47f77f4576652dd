// Fused batch norm (+ residual)(+ ReLU) over [M rows, C channels] (v1). See
// fused_bn.cuh for the passes, the bytes each moves and the deterministic
// reduction scheme; this file is the launch sequence:
//   forward:  [training] seg sums (shifted x sums, K = 2) -> bn_stats_kernel
//             (statistics, running update, mean and scale for the apply)
//             -> apply walk (y = act(BN(x) [+ residual])).
//   backward: seg sums (g and g*(x - mean), K = 2; also writes dresidual)
//             -> per-channel coefficients (kernels/common/bn_math.h)
//             -> dx walk.
// The walks are the segmented column walk of fused_bn.cuh with one segment of
// M rows: a thread owns one channel and strides over rows, so per-channel
// constants sit in registers and no element index is divided. Elementwise
// math is kernels/common/se_math.h and bn_math.h in fp32 (bf16 widened on
// load, rounded on store); statistics and coefficients in fp64.
#include "kernels/cuda/fused_bn.cuh"

#include "kernels/common/bn_math.h"
#include "kernels/common/se_math.h"
#include "kernels/cuda/common.cuh"

namespace rz {

using namespace fused_cuda;

template <typename T>
cudaError_t fused_bn_fwd_cuda(const T* x, const T* residual, const float* gamma, const float* beta,
                              T* y, float* save_mean, float* save_invstd, float* running_mean,
                              float* running_var, int64_t M, int64_t C, const FusedBnOptions& opt,
                              const double* batch_sums, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  if (M < 1) return cudaErrorInvalidValue;
  if (!opt.training && (running_mean == nullptr || running_var == nullptr))
    return cudaErrorInvalidValue;
  const SegGrid g = make_seg_grid(1, M, C);
  if (!seg_grid_ok(g)) return cudaErrorInvalidValue;
  const bool training = opt.training, relu_on = opt.relu;
  const bool reduce = training && batch_sums == nullptr;  // the statistics pass runs here
  WorkspaceLayout lay;
  const size_t o_partial =
      lay.add<float>(reduce ? static_cast<int64_t>(seg_partial_floats(g, 2)) : 0);
  const size_t o_nc = lay.add<double>(reduce ? 2 * C : 0);
  const size_t o_mean = lay.add<float>(C), o_scale = lay.add<float>(C);
  return with_workspace_bytes(lay.bytes(), stream, [&](void* ws) {
    float* partial = at<float>(ws, o_partial);
    const double* nc = reduce ? at<double>(ws, o_nc) : batch_sums;
    float* mean = at<float>(ws, o_mean);
    float* scale = at<float>(ws, o_scale);
    cudaError_t err = cudaSuccess;
    if (reduce) {
      err = launch_seg_sums<2>(
          g,
          [=] __device__(const SegThread& s, float* acc) {
            const float shift = load_f32(x[s.c]);
            for (int64_t r = s.first; r < s.end; r += kRowLanes) {
              const float d = load_f32(x[nlc_index(s.n, r, s.c, g.L, g.C)]) - shift;
              acc[0] += d;
              acc[1] += d * d;
            }
          },
          partial, at<double>(ws, o_nc), stream);
      if (err != cudaSuccess) return err;
    }
    // Given sums are raw (shift 0): bn_stats_kernel takes x == nullptr for that.
    bn_stats_kernel<T><<<static_cast<unsigned>((C + kBlock - 1) / kBlock), kBlock, 0, stream>>>(
        nc, reduce ? x : nullptr, gamma, mean, scale, nullptr, save_mean, save_invstd, running_mean, running_var, 1, M,
        C, training, opt.momentum, opt.eps);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    return launch_seg_map(
        g,
        [=] __device__(const SegThread& s) {
          const float mu = mean[s.c], sc = scale[s.c], b = beta[s.c];
          for (int64_t r = s.first; r < s.end; r += kRowLanes) {
            const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
            float v = bn_apply(load_f32(x[i]), mu, sc, b);
            if (residual != nullptr) v += load_f32(residual[i]);
            y[i] = store_f32<T>(bn_act(v, relu_on));
          }
        },
        stream);
  });
}

template <typename T>
cudaError_t fused_bn_bwd_cuda(const T* x, const T* y, const T* dy, const float* gamma,
                              const float* mean, const float* invstd, T* dx, T* dresidual,
                              float* dgamma, float* dbeta, int64_t M, int64_t C,
                              const FusedBnOptions& opt, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  if (M < 1) return cudaErrorInvalidValue;
  const bool training = opt.training, relu_on = opt.relu;
  if (relu_on && y == nullptr) return cudaErrorInvalidValue;
  const bool need_sums = dgamma != nullptr || dbeta != nullptr || (dx != nullptr && training);
  if (!need_sums && dx == nullptr && dresidual == nullptr) return cudaSuccess;
  const SegGrid g = make_seg_grid(1, M, C);
  if (!seg_grid_ok(g)) return cudaErrorInvalidValue;
  WorkspaceLayout lay;
  const size_t o_partial =
      lay.add<float>(need_sums ? static_cast<int64_t>(seg_partial_floats(g, 2)) : 0);
  const size_t o_nc = lay.add<double>(need_sums ? 2 * C : 0);
  const size_t o_k = lay.add<float>(3 * C);
  return with_workspace_bytes(lay.bytes(), stream, [&](void* ws) {
    float* partial = at<float>(ws, o_partial);
    double* nc = at<double>(ws, o_nc);
    float* k1 = at<float>(ws, o_k);
    float* mdy = k1 + C;
    float* k2 = mdy + C;
    cudaError_t err = cudaSuccess;
    if (need_sums) {
      err = launch_seg_sums<2>(
          g,
          [=] __device__(const SegThread& s, float* acc) {
            const float mu = mean[s.c];
            for (int64_t r = s.first; r < s.end; r += kRowLanes) {
              const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
              const float gv =
                  bn_act_grad(relu_on ? load_f32(y[i]) : 0.0f, load_f32(dy[i]), relu_on);
              if (dresidual != nullptr) dresidual[i] = store_f32<T>(gv);
              acc[0] += gv;
              acc[1] += gv * (load_f32(x[i]) - mu);
            }
          },
          partial, nc, stream);
    } else if (dresidual != nullptr) {
      err = launch_seg_map(
          g,
          [=] __device__(const SegThread& s) {
            for (int64_t r = s.first; r < s.end; r += kRowLanes) {
              const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
              dresidual[i] = store_f32<T>(
                  bn_act_grad(relu_on ? load_f32(y[i]) : 0.0f, load_f32(dy[i]), relu_on));
            }
          },
          stream);
    }
    if (err != cudaSuccess) return err;
    const double inv_m = 1.0 / static_cast<double>(M);
    err = cuda_common::launch_map(C, stream, [=] __device__(int64_t c) {
      const double istd = static_cast<double>(invstd[c]);
      const double s_g = need_sums ? nc[c] : 0.0, s_gxc = need_sums ? nc[C + c] : 0.0;
      if (dbeta != nullptr) dbeta[c] = static_cast<float>(s_g);
      if (dgamma != nullptr) dgamma[c] = static_cast<float>(s_gxc * istd);
      const BnBackwardCoeffs k =
          bn_backward_coeffs(static_cast<double>(gamma[c]), istd, s_g, s_gxc, inv_m, training);
      k1[c] = static_cast<float>(k.k1);
      mdy[c] = static_cast<float>(k.mdy);
      k2[c] = static_cast<float>(k.k2);
    });
    if (err != cudaSuccess || dx == nullptr) return err;
    return launch_seg_map(
        g,
        [=] __device__(const SegThread& s) {
          const float mu = mean[s.c], a = k1[s.c], b = mdy[s.c], d = k2[s.c];
          for (int64_t r = s.first; r < s.end; r += kRowLanes) {
            const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
            // dresidual already holds g (it may alias dy).
            const float gv = dresidual != nullptr ? load_f32(dresidual[i])
                                                  : bn_act_grad(relu_on ? load_f32(y[i]) : 0.0f,
                                                                load_f32(dy[i]), relu_on);
            dx[i] = store_f32<T>(bn_backward_dx(a, b, d, gv, load_f32(x[i]) - mu));
          }
        },
        stream);
  });
}

#define RZ_INSTANTIATE(T)                                                                       \
  template cudaError_t fused_bn_fwd_cuda<T>(const T*, const T*, const float*, const float*, T*, \
                                            float*, float*, float*, float*, int64_t, int64_t,   \
                                            const FusedBnOptions&, const double*, cudaStream_t);\
  template cudaError_t fused_bn_bwd_cuda<T>(                                                    \
      const T*, const T*, const T*, const float*, const float*, const float*, T*, T*, float*,   \
      float*, int64_t, int64_t, const FusedBnOptions&, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
