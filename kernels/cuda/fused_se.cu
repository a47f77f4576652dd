// Fused SE block tail (v1). See fused_se.cuh for the passes and bytes moved;
// this file is the launch sequence and the small kernels between the passes.
//   forward:  seg sums (K = 2: t - shift, (t - shift)^2 per image and channel)
//             -> bn_stats_kernel (fused_bn.cuh) -> pooled (thread per (n, c))
//             -> fc1 + ReLU (warp per (n, j)) -> fc2 + sigmoid (warp per
//             (n, c)) -> tail walk (out = relu(BN(t) * gate + shortcut)).
//   backward: seg sums (K = 3: g, g*(t - mean), t - mean; writes dshortcut)
//             -> dzs (thread per (n, c)) -> dh (se_dz_kernel) -> dp (thread
//             per (n, c)) -> SE parameter gradients (thread per weight, sums
//             over images) -> BN coefficients (thread per channel) -> dt walk.
// The small kernels spread the SE MLP over N*rd or N*C warps/threads (not one
// block per image), so W1 and W2 are read from L2 by many SMs at once.
// The big-tensor walks are the segmented column walk of fused_bn.cuh with one
// segment per image: a thread owns one (image, channel) and strides over that
// image's rows, so gate[n, c] and the BN constants sit in registers.
#include "kernels/cuda/fused_se.cuh"

#include "kernels/common/activation_math.h"
#include "kernels/common/bn_math.h"
#include "kernels/common/se_math.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/fused_bn.cuh"

namespace rz {

namespace {

using namespace fused_cuda;

// Warp per output o < outputs: v = sum over k < K of a(o, k), lanes striding
// over k, then a fixed xor tree (every lane gets v); lane 0 calls done(o, v).
// The SE dot products along contiguous weight rows (coalesced).
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename A, typename D>
__global__ void __launch_bounds__(kBlock) warp_dot_kernel(int64_t outputs, int64_t K, A a, D done) {
  const int64_t o = (blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (o >= outputs) return;  // the whole warp leaves together
  float v = 0.0f;
  for (int64_t k = lane; k < K; k += 32) v += a(o, k);
  v = warp_sum(v);
  if (lane == 0) done(o, v);
}

template <typename A, typename D>
cudaError_t launch_warp_dot(int64_t outputs, int64_t K, A a, D done, cudaStream_t stream) {
  const int64_t blocks = (outputs * 32 + kBlock - 1) / kBlock;
  warp_dot_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(outputs, K, a, done);
  return cudaGetLastError();
}

// dh[n, j] = [z[n, j] > 0] * sum_c dzs[n, c] w2[c, j]: the one SE product
// whose weight walk runs down a column. Block (32 j, 8 c lanes): lanes read
// consecutive j of one w2 row (coalesced), each c lane sums c = ty, ty + 8,
// ... in order, then a fixed tree. Grid (ceil(rd / 32), N).
__global__ void __launch_bounds__(kBlock)
    se_dz_kernel(const float* dzs, const float* w2, const float* hidden, float* dh, int64_t C,
                 int64_t rd) {
  __shared__ float part[kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.y, j = static_cast<int64_t>(blockIdx.x) * kTileC + tx;
  float a = 0.0f;
  if (j < rd)
    for (int64_t c = ty; c < C; c += kRowLanes) a += dzs[n * C + c] * w2[c * rd + j];
  part[ty][tx] = a;
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (ty < half) part[ty][tx] += part[ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && j < rd) dh[n * rd + j] = relu_grad_from_output(hidden[n * rd + j], part[0][tx]);
}

// Grid limits: N images in gridDim.y of se_dz_kernel and gridDim.z of the walks.
bool se_dims_ok(const SeDims& d) {
  return d.N >= 1 && d.HW >= 1 && d.C >= 1 && d.rd >= 1 && d.N <= 65535;
}

}  // namespace

template <typename T>
cudaError_t fused_se_fwd_cuda(const T* t, const T* shortcut, const SeWeights<float>& w, T* out,
                              const SeSaved<float>& saved, float* running_mean, float* running_var,
                              const SeDims& d, const FusedSeOptions& opt, const double* image_sums,
                              cudaStream_t stream) {
  if (!se_dims_ok(d)) return cudaErrorInvalidValue;
  if (!opt.training && (running_mean == nullptr || running_var == nullptr))
    return cudaErrorInvalidValue;
  const int64_t N = d.N, HW = d.HW, C = d.C, rd = d.rd;
  const SegGrid g = make_seg_grid(N, HW, C);
  const bool reduce = image_sums == nullptr;  // the statistics pass runs here
  WorkspaceLayout lay;
  const size_t o_partial =
      lay.add<float>(reduce ? static_cast<int64_t>(seg_partial_floats(g, 2)) : 0);
  const size_t o_nc = lay.add<double>(reduce ? 2 * N * C : 0);
  const size_t o_mms = lay.add<double>(C);
  const size_t o_mean = lay.add<float>(C), o_scale = lay.add<float>(C);
  const size_t o_pooled = lay.add<float>(saved.pooled == nullptr ? N * C : 0);
  const size_t o_hidden = lay.add<float>(saved.hidden == nullptr ? N * rd : 0);
  const size_t o_gate = lay.add<float>(saved.gate == nullptr ? N * C : 0);
  return with_workspace_bytes(lay.bytes(), stream, [&](void* ws) {
    float* partial = at<float>(ws, o_partial);
    const double* nc = reduce ? at<double>(ws, o_nc) : image_sums;
    double* mms = at<double>(ws, o_mms);
    float* mean = at<float>(ws, o_mean);
    float* scale = at<float>(ws, o_scale);
    float* pooled = saved.pooled != nullptr ? saved.pooled : at<float>(ws, o_pooled);
    float* hidden = saved.hidden != nullptr ? saved.hidden : at<float>(ws, o_hidden);
    float* gate = saved.gate != nullptr ? saved.gate : at<float>(ws, o_gate);
    // Pass 1: per-image shifted sums (shift = t[0, 0, c]), unless given.
    cudaError_t err = cudaSuccess;
    if (reduce) {
      err = launch_seg_sums<2>(
          g,
          [=] __device__(const SegThread& s, float* acc) {
            const float shift = load_f32(t[s.c]);
            for (int64_t r = s.first; r < s.end; r += kRowLanes) {
              const float v = load_f32(t[nlc_index(s.n, r, s.c, g.L, g.C)]) - shift;
              acc[0] += v;
              acc[1] += v * v;
            }
          },
          partial, at<double>(ws, o_nc), stream);
      if (err != cudaSuccess) return err;
    }
    bn_stats_kernel<T><<<static_cast<unsigned>((C + kBlock - 1) / kBlock), kBlock, 0, stream>>>(
        nc, reduce ? t : nullptr, w.gamma, mean, scale, mms, saved.mean, saved.invstd, running_mean, running_var, N,
        HW, C, opt.training, opt.momentum, opt.eps);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    // SE excitation: the squeeze from the per-image sums, fc1 + ReLU, fc2 + sigmoid.
    const double inv_hw = 1.0 / static_cast<double>(HW);
    const float* beta_p = w.beta;
    err = cuda_common::launch_map(N * C, stream, [=] __device__(int64_t i) {
      const int64_t n = i / C, c = i % C;
      pooled[i] = static_cast<float>(se_pooled(nc[seg_sum_index(0, n, c, N, C)], inv_hw, mms[c],
                                               static_cast<double>(scale[c]),
                                               static_cast<double>(beta_p[c])));
    });
    if (err != cudaSuccess) return err;
    const float* w1 = w.w1;
    const float* b1 = w.b1;
    const float* w2 = w.w2;
    const float* b2 = w.b2;
    err = launch_warp_dot(
        N * rd, C,
        [=] __device__(int64_t o, int64_t c) {
          return w1[(o % rd) * C + c] * pooled[(o / rd) * C + c];
        },
        [=] __device__(int64_t o, float v) { hidden[o] = relu(v + b1[o % rd]); }, stream);
    if (err != cudaSuccess) return err;
    err = launch_warp_dot(
        N * C, rd,
        [=] __device__(int64_t o, int64_t j) {
          return w2[(o % C) * rd + j] * hidden[(o / C) * rd + j];
        },
        [=] __device__(int64_t o, float v) { gate[o] = sigmoid(v + b2[o % C]); }, stream);
    if (err != cudaSuccess) return err;
    // Pass 2: out = relu(BN(t) * gate + shortcut).
    const float* beta = w.beta;
    return launch_seg_map(
        g,
        [=] __device__(const SegThread& s) {
          const float mu = mean[s.c], sc = scale[s.c], b = beta[s.c];
          const float gt = gate[s.n * g.C + s.c];
          for (int64_t r = s.first; r < s.end; r += kRowLanes) {
            const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
            out[i] = store_f32<T>(
                se_tail_out(bn_apply(load_f32(t[i]), mu, sc, b), gt, load_f32(shortcut[i])));
          }
        },
        stream);
  });
}

template <typename T>
cudaError_t fused_se_bwd_cuda(const T* t, const T* out, const T* dout, const SeWeights<float>& w,
                              const SeSaved<const float>& saved, T* dt, T* dshortcut,
                              const SeGrads<float>& grads, const SeDims& d,
                              const FusedSeOptions& opt, cudaStream_t stream) {
  if (!se_dims_ok(d)) return cudaErrorInvalidValue;
  if (saved.mean == nullptr || saved.invstd == nullptr || saved.pooled == nullptr ||
      saved.hidden == nullptr || saved.gate == nullptr || dt == nullptr || dshortcut == nullptr)
    return cudaErrorInvalidValue;
  const int64_t N = d.N, HW = d.HW, C = d.C, rd = d.rd;
  const SegGrid g = make_seg_grid(N, HW, C);
  WorkspaceLayout lay;
  const size_t o_partial = lay.add<float>(static_cast<int64_t>(seg_partial_floats(g, 3)));
  const size_t o_nc = lay.add<double>(3 * N * C);
  const size_t o_dzs = lay.add<float>(N * C), o_dp = lay.add<float>(N * C);
  const size_t o_dh = lay.add<float>(N * rd);
  const size_t o_k = lay.add<float>(3 * C);
  const float* mean = saved.mean;
  const float* invstd = saved.invstd;
  const float* pooled = saved.pooled;
  const float* hidden = saved.hidden;
  const float* gate = saved.gate;
  const bool training = opt.training;
  return with_workspace_bytes(lay.bytes(), stream, [&](void* ws) {
    float* partial = at<float>(ws, o_partial);
    double* nc = at<double>(ws, o_nc);
    float* dzs = at<float>(ws, o_dzs);
    float* dp = at<float>(ws, o_dp);
    float* dh = at<float>(ws, o_dh);
    float* k1 = at<float>(ws, o_k);
    float* mdy = k1 + C;
    float* k2 = mdy + C;
    // Pass 1: g = dout * [out > 0] -> dshortcut; sums of g, g*(t - mean), t - mean.
    cudaError_t err = launch_seg_sums<3>(
        g,
        [=] __device__(const SegThread& s, float* acc) {
          const float mu = mean[s.c];
          for (int64_t r = s.first; r < s.end; r += kRowLanes) {
            const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
            const float gv = relu_grad_from_output(load_f32(out[i]), load_f32(dout[i]));
            dshortcut[i] = store_f32<T>(gv);
            const float xc = load_f32(t[i]) - mu;
            acc[0] += gv;
            acc[1] += gv * xc;
            acc[2] += xc;
          }
        },
        partial, nc, stream);
    if (err != cudaSuccess) return err;
    // SE MLP backward: dzs = ds * s (1 - s), dh = [z > 0] * (dzs w2), dp = dh w1.
    const float* gamma_p = w.gamma;
    const float* beta_p = w.beta;
    err = cuda_common::launch_map(N * C, stream, [=] __device__(int64_t i) {
      const int64_t n = i / C, c = i % C;
      const double scale = static_cast<double>(gamma_p[c]) * static_cast<double>(invstd[c]);
      const double ds =
          se_gate_grad(scale, static_cast<double>(beta_p[c]), nc[seg_sum_index(0, n, c, N, C)],
                       nc[seg_sum_index(1, n, c, N, C)]);
      dzs[i] = sigmoid_grad_from_output(gate[i], static_cast<float>(ds));
    });
    if (err != cudaSuccess) return err;
    se_dz_kernel<<<dim3(static_cast<unsigned>((rd + kTileC - 1) / kTileC),
                        static_cast<unsigned>(N)),
                   dim3(kTileC, kRowLanes), 0, stream>>>(dzs, w.w2, hidden, dh, C, rd);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    const float* w1 = w.w1;
    err = cuda_common::launch_map(N * C, stream, [=] __device__(int64_t i) {
      const int64_t n = i / C, c = i % C;
      float a = 0.0f;
      for (int64_t j = 0; j < rd; ++j) a += dh[n * rd + j] * w1[j * C + c];
      dp[i] = a;
    });
    if (err != cudaSuccess) return err;

    // SE parameter gradients: sums over images in order, fp64.
    float* dw1 = grads.dw1;
    float* dw2 = grads.dw2;
    float* db1 = grads.db1;
    float* db2 = grads.db2;
    if (dw1 != nullptr || dw2 != nullptr) {
      err = cuda_common::launch_map(C * rd, stream, [=] __device__(int64_t i) {
        if (dw2 != nullptr) {  // dw2[c, j] = sum_n dzs[n, c] z[n, j]
          const int64_t c = i / rd, j = i % rd;
          double a = 0.0;
          for (int64_t n = 0; n < N; ++n)
            a += static_cast<double>(dzs[n * C + c]) * static_cast<double>(hidden[n * rd + j]);
          dw2[i] = static_cast<float>(a);
        }
        if (dw1 != nullptr) {  // dw1[j, c] = sum_n dh[n, j] p[n, c]
          const int64_t j = i / C, c = i % C;
          double a = 0.0;
          for (int64_t n = 0; n < N; ++n)
            a += static_cast<double>(dh[n * rd + j]) * static_cast<double>(pooled[n * C + c]);
          dw1[i] = static_cast<float>(a);
        }
      });
      if (err != cudaSuccess) return err;
    }
    if (db1 != nullptr || db2 != nullptr) {
      err = cuda_common::launch_map(C + rd, stream, [=] __device__(int64_t i) {
        double a = 0.0;
        if (i < C) {
          if (db2 == nullptr) return;
          for (int64_t n = 0; n < N; ++n) a += static_cast<double>(dzs[n * C + i]);
          db2[i] = static_cast<float>(a);
        } else {
          if (db1 == nullptr) return;
          const int64_t j = i - C;
          for (int64_t n = 0; n < N; ++n) a += static_cast<double>(dh[n * rd + j]);
          db1[j] = static_cast<float>(a);
        }
      });
      if (err != cudaSuccess) return err;
    }

    // BN coefficients from the sums of du = g * gate + dp / HW.
    const double inv_hw = 1.0 / static_cast<double>(HW);
    const double inv_m = 1.0 / static_cast<double>(N * HW);
    const float* gamma = w.gamma;
    float* dgamma = grads.dgamma;
    float* dbeta = grads.dbeta;
    err = cuda_common::launch_map(C, stream, [=] __device__(int64_t c) {
      double sum_du = 0.0, sum_du_xc = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        const BnDySums s = se_du_image_sums(
            static_cast<double>(gate[n * C + c]), static_cast<double>(dp[n * C + c]), inv_hw,
            nc[seg_sum_index(0, n, c, N, C)], nc[seg_sum_index(1, n, c, N, C)],
            nc[seg_sum_index(2, n, c, N, C)]);
        sum_du += s.sum_dy;
        sum_du_xc += s.sum_dy_xc;
      }
      const double istd = static_cast<double>(invstd[c]);
      if (dbeta != nullptr) dbeta[c] = static_cast<float>(sum_du);
      if (dgamma != nullptr) dgamma[c] = static_cast<float>(sum_du_xc * istd);
      const BnBackwardCoeffs k = bn_backward_coeffs(static_cast<double>(gamma[c]), istd, sum_du,
                                                    sum_du_xc, inv_m, training);
      k1[c] = static_cast<float>(k.k1);
      mdy[c] = static_cast<float>(k.mdy);
      k2[c] = static_cast<float>(k.k2);
    });
    if (err != cudaSuccess) return err;

    // Pass 2: dt = k1 * (g * gate + dp / HW - mdy - (t - mean) * k2).
    return launch_seg_map(
        g,
        [=] __device__(const SegThread& s) {
          const float mu = mean[s.c], a = k1[s.c], b = mdy[s.c], e = k2[s.c];
          const float gt = gate[s.n * g.C + s.c];
          const float dphw = static_cast<float>(static_cast<double>(dp[s.n * g.C + s.c]) * inv_hw);
          for (int64_t r = s.first; r < s.end; r += kRowLanes) {
            const int64_t i = nlc_index(s.n, r, s.c, g.L, g.C);
            const float du = se_du(load_f32(dshortcut[i]), gt, dphw);
            dt[i] = store_f32<T>(bn_backward_dx(a, b, e, du, load_f32(t[i]) - mu));
          }
        },
        stream);
  });
}

#define RZ_INSTANTIATE(T)                                                                         \
  template cudaError_t fused_se_fwd_cuda<T>(const T*, const T*, const SeWeights<float>&, T*,      \
                                            const SeSaved<float>&, float*, float*, const SeDims&, \
                                            const FusedSeOptions&, const double*, cudaStream_t);  \
  template cudaError_t fused_se_bwd_cuda<T>(                                                      \
      const T*, const T*, const T*, const SeWeights<float>&, const SeSaved<const float>&, T*, T*, \
      const SeGrads<float>&, const SeDims&, const FusedSeOptions&, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
