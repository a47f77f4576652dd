// CUDA twin of kernels/cpu/fused_bn.h: batch norm (+ residual add)(+ ReLU) on
// NHWC viewed as [M = N*H*W rows, C channels], same meaning and argument
// order as the CPU twin plus the stream. Activations x, residual, y, dy, dx,
// dresidual are T (float or bf16); the per-channel vectors gamma, beta,
// save_mean, save_invstd, running stats, dgamma, dbeta are fp32.
//
// Passes over the big [M, C] tensors (elements read (R) and written (W) per
// element; bf16 moves 2 bytes per element, fp32 4):
//   forward, training: pass 1 reads x (shifted sums); pass 2 reads x (and the
//     residual), writes y. Total 2R + 1W (with residual 3R + 1W); unfused BN
//     (3R + 1W) + add (2R + 1W) + ReLU (1R + 1W).
//   forward, eval: pass 2 only, 1R + 1W (2R + 1W).
//   backward: pass 1 reads dy, y (ReLU only) and x and writes dresidual when
//     asked; pass 2 reads dresidual (or dy and y again) and x, writes dx.
//     BN + ReLU 6R + 1W; BN + add + ReLU 5R + 2W; plain BN 4R + 1W (unfused
//     ReLU backward 2R + 1W, then BN backward 4R + 1W).
//
// Reductions (deterministic, no atomics): the column walk of
// kernels/cuda/batch_norm.cuh, segmented: grid (ceil(C/32) channel tiles,
// chunks, segments), block 32 x 8 (threadIdx.x the channel, threadIdx.y one
// of 8 row lanes striding over the chunk's rows). Chunks come from
// fused_row_chunks(L) (kernels/common/se_math.h), a function of the shape
// only. Per-thread fp32 sums, a fixed shared-memory tree per block, then the
// chunk partials of each (segment, channel) are added in fp64 by 8 lanes and
// a fixed tree. Statistics are shifted sums (shift = the channel's first
// value), finalized in fp64. Workspace from the stream-ordered pool
// (cudaMallocAsync / cudaFreeAsync on `stream`); callers pass none.
//
// Each launcher returns the first error of its allocations and launches
// (cudaGetLastError after each launch); invalid sizes return
// cudaErrorInvalidValue. Unvalidated on a GPU.
//
// The device-side building blocks below the public launchers (under
// __CUDACC__) are shared by kernels/cuda/fused_bn.cu and fused_se.cu; host
// C++ sees only the launchers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"
#include "kernels/common/se_math.h"
#include "kernels/cpu/fused_bn.h"

namespace rz {

// Forward. Training: batch statistics; running_mean / running_var (each may be
// nullptr) are updated in place. Eval: running_mean / running_var required,
// read only. save_mean / save_invstd (each may be nullptr) receive the
// statistics used. residual may be nullptr. M, C >= 1 (C == 0: nothing).
// batch_sums (device, training only, may be nullptr): [2][C] raw sums and
// sums of squares of x, as kernels/cpu/fused_bn.h describes; the statistics
// pass is skipped (1R + 1W instead of 2R + 1W).
template <typename T>
cudaError_t fused_bn_fwd_cuda(const T* x, const T* residual, const float* gamma, const float* beta,
                              T* y, float* save_mean, float* save_invstd, float* running_mean,
                              float* running_var, int64_t M, int64_t C, const FusedBnOptions& opt,
                              const double* batch_sums, cudaStream_t stream);

// Backward; writes (never adds) dresidual = g, dgamma, dbeta, dx (each may be
// nullptr), g = opt.relu ? dy * [y > 0] : dy. y is read only when opt.relu.
// dresidual may alias dy.
template <typename T>
cudaError_t fused_bn_bwd_cuda(const T* x, const T* y, const T* dy, const float* gamma,
                              const float* mean, const float* invstd, T* dx, T* dresidual,
                              float* dgamma, float* dbeta, int64_t M, int64_t C,
                              const FusedBnOptions& opt, cudaStream_t stream);

}  // namespace rz

#if defined(__CUDACC__)
#include "kernels/cuda/common.cuh"

namespace rz::fused_cuda {

using cuda_common::load_f32;
using cuda_common::store_f32;

constexpr int kTileC = 32;
constexpr int kRowLanes = 8;
constexpr int kBlock = kTileC * kRowLanes;

// The segmented column walk: N segments of L rows, C channels; element
// (n, r, c) at nlc_index(n, r, c, L, C).
struct SegGrid {
  int64_t N, L, C;
  RowChunks ch;
};

inline SegGrid make_seg_grid(int64_t N, int64_t L, int64_t C) {
  return {N, L, C, fused_row_chunks(L)};
}

// Grid limits: chunks <= kFusedMaxChunks < 65536; segments must fit gridDim.z.
inline bool seg_grid_ok(const SegGrid& g) {
  return g.N >= 1 && g.L >= 1 && g.C >= 1 && g.N <= 65535 &&
         (g.C + kTileC - 1) / kTileC <= 0x7fffffff;
}

inline dim3 seg_blocks(const SegGrid& g) {
  return dim3(static_cast<unsigned>((g.C + kTileC - 1) / kTileC), static_cast<unsigned>(g.ch.count),
              static_cast<unsigned>(g.N));
}

// This thread's channel, segment and rows: rows first, first + kRowLanes, ...
// below end.
struct SegThread {
  int64_t n, c, first, end;
  bool active;
};

__device__ __forceinline__ SegThread seg_thread(const SegGrid& g) {
  SegThread s;
  s.n = blockIdx.z;
  s.c = static_cast<int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  const LaneRows rows = chunk_lane_rows(g.ch, g.L, blockIdx.y, threadIdx.y);
  s.first = rows.first;
  s.end = rows.end;
  s.active = s.c < g.C;
  return s;
}

// Elementwise walk: f(SegThread) visits its rows (for r = first; r < end;
// r += kRowLanes), so per-(n, c) constants are loaded once per thread.
template <typename F>
__global__ void __launch_bounds__(kBlock) seg_map_kernel(SegGrid g, F f) {
  const SegThread s = seg_thread(g);
  if (s.active) f(s);
}

template <typename F>
cudaError_t launch_seg_map(const SegGrid& g, F f, cudaStream_t stream) {
  seg_map_kernel<<<seg_blocks(g), dim3(kTileC, kRowLanes), 0, stream>>>(g, f);
  return cudaGetLastError();
}

// Reduction walk, pass 1: f(SegThread, acc) adds K fp32 values per channel
// over its rows; the block's 8 lanes are combined by a fixed tree into
// partial[((n * chunks + chunk) * K + k) * C + c].
template <int K, typename F>
__global__ void __launch_bounds__(kBlock) seg_partials_kernel(SegGrid g, F f, float* partial) {
  __shared__ float part[K][kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const SegThread s = seg_thread(g);
  float acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  if (s.active) f(s, acc);
  for (int k = 0; k < K; ++k) part[k][ty][tx] = acc[k];
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (ty < half)
      for (int k = 0; k < K; ++k) part[k][ty][tx] += part[k][ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && s.active)
    for (int k = 0; k < K; ++k)
      partial[seg_partial_index(s.n, blockIdx.y, k, s.c, g.ch.count, K, g.C)] = part[k][0][tx];
}

// Pass 1b: nc[(k * N + n) * C + c] = fp64 sum of the chunk partials of
// (n, c): lane ty adds chunks ty, ty + 8, ... in order, then a fixed tree.
// Grid (channel tiles, N).
template <int K>
__global__ void __launch_bounds__(kBlock)
    seg_combine_kernel(SegGrid g, const float* partial, double* nc) {
  __shared__ double part[K][kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t n = blockIdx.y, c = static_cast<int64_t>(blockIdx.x) * kTileC + tx;
  double acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0;
  if (c < g.C)
    for (int64_t j = ty; j < g.ch.count; j += kRowLanes)
      for (int k = 0; k < K; ++k)
        acc[k] += static_cast<double>(partial[seg_partial_index(n, j, k, c, g.ch.count, K, g.C)]);
  for (int k = 0; k < K; ++k) part[k][ty][tx] = acc[k];
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (ty < half)
      for (int k = 0; k < K; ++k) part[k][ty][tx] += part[k][ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && c < g.C)
    for (int k = 0; k < K; ++k) nc[seg_sum_index(k, n, c, g.N, g.C)] = part[k][0][tx];
}

// Pass 1 + 1b: nc (K * N * C doubles) from f, with `partial` scratch of
// N * chunks * K * C floats.
template <int K, typename F>
cudaError_t launch_seg_sums(const SegGrid& g, F f, float* partial, double* nc,
                            cudaStream_t stream) {
  seg_partials_kernel<K><<<seg_blocks(g), dim3(kTileC, kRowLanes), 0, stream>>>(g, f, partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((g.C + kTileC - 1) / kTileC), static_cast<unsigned>(g.N));
  seg_combine_kernel<K><<<grid, dim3(kTileC, kRowLanes), 0, stream>>>(g, partial, nc);
  return cudaGetLastError();
}

inline size_t seg_partial_floats(const SegGrid& g, int K) {
  return static_cast<size_t>(g.N * g.ch.count * K * g.C);
}

// Byte offsets of the pieces of one stream-ordered workspace allocation
// (each 256-byte aligned).
class WorkspaceLayout {
 public:
  template <typename X>
  size_t add(int64_t count) {
    offset_ = (offset_ + 255) & ~size_t{255};
    const size_t at = offset_;
    offset_ += static_cast<size_t>(count > 0 ? count : 0) * sizeof(X);
    return at;
  }
  size_t bytes() const { return offset_ > 0 ? offset_ : 1; }

 private:
  size_t offset_ = 0;
};

template <typename X>
X* at(void* base, size_t offset) {
  return reinterpret_cast<X*>(static_cast<char*>(base) + offset);
}

using cuda_common::with_workspace_bytes;

// Per-channel BN statistics from the per-segment shifted sums nc [2][N][C]
// (training) or from the running statistics (eval). Writes mean and scale =
// gamma * invstd (fp32, for the apply pass), mean_minus_shift (fp64, for the
// SE squeeze; may be nullptr), save_mean / save_invstd and the running update
// (each may be nullptr). shift[c] = x[c], the first row, or 0 when x is
// nullptr (raw sums). Thread per channel, sums over n in order.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    bn_stats_kernel(const double* nc, const T* x, const float* gamma, float* mean, float* scale,
                    double* mean_minus_shift, float* save_mean, float* save_invstd,
                    float* running_mean, float* running_var, int64_t N, int64_t L, int64_t C,
                    bool training, double momentum, double eps) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x;
  if (c >= C) return;
  const double shift = x != nullptr ? static_cast<double>(load_f32(x[c])) : 0.0;
  double mu, istd;
  if (training) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      s1 += nc[seg_sum_index(0, n, c, N, C)];
      s2 += nc[seg_sum_index(1, n, c, N, C)];
    }
    const int64_t M = N * L;
    const BnMoments mo = bn_moments_from_shifted(s1, s2, 1.0 / static_cast<double>(M));
    mu = shift + mo.mean_minus_shift;
    istd = bn_invstd(mo.var, eps);
    if (mean_minus_shift != nullptr) mean_minus_shift[c] = mo.mean_minus_shift;
    if (running_mean != nullptr)
      running_mean[c] =
          static_cast<float>(bn_running_update(static_cast<double>(running_mean[c]), mu, momentum));
    if (running_var != nullptr)
      running_var[c] = static_cast<float>(bn_running_update(
          static_cast<double>(running_var[c]), mo.var * bn_unbias_factor(M), momentum));
  } else {
    mu = static_cast<double>(running_mean[c]);
    istd = bn_invstd(static_cast<double>(running_var[c]), eps);
    if (mean_minus_shift != nullptr) mean_minus_shift[c] = mu - shift;
  }
  mean[c] = static_cast<float>(mu);
  scale[c] = static_cast<float>(istd * static_cast<double>(gamma[c]));
  if (save_mean != nullptr) save_mean[c] = static_cast<float>(mu);
  if (save_invstd != nullptr) save_invstd[c] = static_cast<float>(istd);
}

}  // namespace rz::fused_cuda
#endif  // __CUDACC__
