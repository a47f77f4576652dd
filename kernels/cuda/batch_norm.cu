// Batch norm over [M rows, C channels] (v1; see batch_norm.cuh for the
// deterministic two-pass reduction scheme).
// Memory traffic (elements of M*C): training forward reads x three times
// (sum, centered sum of squares, normalize) and writes y once; eval forward
// 1 read + 1 write; backward reads x and dy twice (sums, then dx) and writes dx
// (eval with dx only: one pass). The per-channel work (R partials per channel,
// R <= 256) is negligible next to that.
// Elementwise passes are grid-stride loops, 256 threads, c = i % C.
#include "kernels/cuda/batch_norm.cuh"

#include "kernels/common/bn_math.h"
#include "kernels/cuda/common.cuh"

namespace rz {

namespace {

using namespace cuda_common;

constexpr int kTileC = 32;
constexpr int kRowLanes = 8;  // kTileC * kRowLanes == kThreads; a power of two
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 256;



// Row chunking of pass 1: a function of M only.
struct Chunks {
  int64_t rows, count;
};
Chunks chunks_for(int64_t M) {
  int64_t count = (M + kMinRowsPerChunk - 1) / kMinRowsPerChunk;
  count = count < 1 ? 1 : (count > kMaxChunks ? kMaxChunks : count);
  const int64_t rows = M > 0 ? (M + count - 1) / count : 1;
  return {rows, M > 0 ? (M + rows - 1) / rows : 1};
}

// Pass 1: partial[(chunk * K + k) * C + c] = sum over the chunk's rows r of what
// f(r, c, acc) adds to acc[k]. Block (kTileC, kRowLanes), grid (tiles, chunks).
template <int K, typename F>
__global__ void __launch_bounds__(kThreads)
    column_partials_kernel(int64_t M, int64_t C, int64_t rows_per_chunk, F f, float* partial) {
  __shared__ float part[K][kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileC + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < M ? r0 + rows_per_chunk : M;
  float acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  if (c < C)
    for (int64_t r = r0 + ty; r < r1; r += kRowLanes) f(r, c, acc);
  for (int k = 0; k < K; ++k) part[k][ty][tx] = acc[k];
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (ty < half)
      for (int k = 0; k < K; ++k) part[k][ty][tx] += part[k][ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && c < C)
    for (int k = 0; k < K; ++k)
      partial[(static_cast<int64_t>(blockIdx.y) * K + k) * C + c] = part[k][0][tx];
}

template <int K, typename F>
cudaError_t launch_partials(int64_t M, int64_t C, Chunks ch, F f, float* partial,
                            cudaStream_t stream) {
  const dim3 block(kTileC, kRowLanes);
  const dim3 grid(static_cast<unsigned>((C + kTileC - 1) / kTileC),
                  static_cast<unsigned>(ch.count));
  column_partials_kernel<K><<<grid, block, 0, stream>>>(M, C, ch.rows, f, partial);
  return cudaGetLastError();
}

// Pass 2 helper: the fixed-order (chunk order) fp64 sum of one channel's partials.
__device__ __forceinline__ double combine(const float* partial, int64_t chunks, int K, int k,
                                          int64_t C, int64_t c) {
  double s = 0.0;
  for (int64_t r = 0; r < chunks; ++r) s += static_cast<double>(partial[(r * K + k) * C + c]);
  return s;
}

template <typename F>
__global__ void __launch_bounds__(kThreads) per_channel_kernel(int64_t C, F f) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (c < C) f(c);
}

template <typename F>
cudaError_t launch_per_channel(int64_t C, F f, cudaStream_t stream) {
  per_channel_kernel<<<static_cast<unsigned>((C + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      C, f);
  return cudaGetLastError();
}


// launch_map with the functor before the stream, as the calls below read.
template <typename F>
cudaError_t map_over(int64_t n, F f, cudaStream_t stream) {
  return launch_map(n, stream, f);
}

// Workspace from the stream-ordered pool; `run(ws)` enqueues the work and
// returns its first error. The workspace is released on the same stream even
// when a launch failed.
template <typename F>
cudaError_t with_workspace(size_t floats, cudaStream_t stream, F run) {
  float* ws = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&ws), floats * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  err = run(ws);
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  return err != cudaSuccess ? err : free_err;
}

}  // namespace

template <typename T>
cudaError_t batch_norm_fwd_train_cuda(const T* x, const float* gamma, const float* beta, T* y,
                                      float* save_mean, float* save_invstd, float* running_mean,
                                      float* running_var, int64_t M, int64_t C, double momentum,
                                      double eps, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  if (M < 1) return cudaErrorInvalidValue;
  const Chunks ch = chunks_for(M);
  const int64_t np = ch.count * C;
  // Workspace: partials [R][1][C], then mean [C] and scale = invstd*gamma [C].
  return with_workspace(static_cast<size_t>(np + 2 * C), stream, [&](float* ws) {
    float* partial = ws;
    float* mean = ws + np;
    float* scale = mean + C;
    const int64_t chunks = ch.count;
    cudaError_t err = launch_partials<1>(
        M, C, ch,
        [=] __device__(int64_t r, int64_t c, float* acc) { acc[0] += load_f32(x[r * C + c]); },
        partial, stream);
    if (err != cudaSuccess) return err;
    const double inv_m = 1.0 / static_cast<double>(M);
    err = launch_per_channel(
        C,
        [=] __device__(int64_t c) {
          mean[c] = static_cast<float>(combine(partial, chunks, 1, 0, C, c) * inv_m);
        },
        stream);
    if (err != cudaSuccess) return err;
    err = launch_partials<1>(
        M, C, ch,
        [=] __device__(int64_t r, int64_t c, float* acc) {
          const float d = load_f32(x[r * C + c]) - mean[c];
          acc[0] += d * d;
        },
        partial, stream);
    if (err != cudaSuccess) return err;
    // M == 1: the unbiased correction M/(M-1) is undefined; keep the biased 0.
    const double unbias = M > 1 ? static_cast<double>(M) / static_cast<double>(M - 1) : 1.0;
    err = launch_per_channel(
        C,
        [=] __device__(int64_t c) {
          const double var = combine(partial, chunks, 1, 0, C, c) * inv_m;
          const double istd = 1.0 / sqrt(var + eps);
          const double mu = static_cast<double>(mean[c]);
          scale[c] = static_cast<float>(istd * static_cast<double>(gamma[c]));
          if (save_mean != nullptr) save_mean[c] = mean[c];
          if (save_invstd != nullptr) save_invstd[c] = static_cast<float>(istd);
          if (running_mean != nullptr)
            running_mean[c] = static_cast<float>(
                (1.0 - momentum) * static_cast<double>(running_mean[c]) + momentum * mu);
          if (running_var != nullptr)
            running_var[c] = static_cast<float>(
                (1.0 - momentum) * static_cast<double>(running_var[c]) + momentum * var * unbias);
        },
        stream);
    if (err != cudaSuccess) return err;
    return map_over(
        M * C,
        [=] __device__(int64_t i) {
          const int64_t c = i % C;
          y[i] = store_f32<T>((load_f32(x[i]) - mean[c]) * scale[c] + beta[c]);
        },
        stream);
  });
}

template <typename T>
cudaError_t batch_norm_fwd_eval_cuda(const T* x, const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var, T* y,
                                     int64_t M, int64_t C, double eps, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  const float epsf = static_cast<float>(eps);
  // v1: the per-channel scale is recomputed per element (a sqrt and a divide;
  // still bandwidth-bound) so no workspace is needed.
  return map_over(
      M * C,
      [=] __device__(int64_t i) {
        const int64_t c = i % C;
        const float scale = gamma[c] / sqrtf(running_var[c] + epsf);
        y[i] = store_f32<T>((load_f32(x[i]) - running_mean[c]) * scale + beta[c]);
      },
      stream);
}

template <typename T>
cudaError_t batch_norm_bwd_cuda(const T* x, const T* dy, const float* gamma, const float* mean,
                                const float* invstd, T* dx, float* dgamma, float* dbeta, int64_t M,
                                int64_t C, bool training, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  const bool need_sums = dgamma != nullptr || dbeta != nullptr || (dx != nullptr && training);
  if (!need_sums && dx == nullptr) return cudaSuccess;
  const Chunks ch = chunks_for(M);
  const int64_t np = need_sums ? ch.count * 2 * C : 0;
  // Workspace: partials [R][2][C] (sum dy, sum dy*(x - mean)), then the dx
  // coefficients k1 = gamma*invstd, mdy = sum(dy)/M, k2 = invstd^2*sum(dy*(x-mean))/M.
  return with_workspace(static_cast<size_t>(np + 3 * C), stream, [&](float* ws) {
    float* partial = ws;
    float* k1 = ws + np;
    float* mdy = k1 + C;
    float* k2 = mdy + C;
    const int64_t chunks = ch.count;
    cudaError_t err = cudaSuccess;
    if (need_sums) {
      err = launch_partials<2>(
          M, C, ch,
          [=] __device__(int64_t r, int64_t c, float* acc) {
            const float g = load_f32(dy[r * C + c]);
            acc[0] += g;
            acc[1] += g * (load_f32(x[r * C + c]) - mean[c]);
          },
          partial, stream);
      if (err != cudaSuccess) return err;
    }
    const double inv_m = M > 0 ? 1.0 / static_cast<double>(M) : 0.0;
    err = launch_per_channel(
        C,
        [=] __device__(int64_t c) {
          const double istd = static_cast<double>(invstd[c]);
          double s_dy = 0.0, s_dyxc = 0.0;
          if (need_sums) {
            s_dy = combine(partial, chunks, 2, 0, C, c);
            s_dyxc = combine(partial, chunks, 2, 1, C, c);
          }
          if (dbeta != nullptr) dbeta[c] = static_cast<float>(s_dy);
          if (dgamma != nullptr) dgamma[c] = static_cast<float>(s_dyxc * istd);
          const BnBackwardCoeffs k = bn_backward_coeffs(static_cast<double>(gamma[c]), istd, s_dy,
                                                        s_dyxc, inv_m, training);
          k1[c] = static_cast<float>(k.k1);
          mdy[c] = static_cast<float>(k.mdy);
          k2[c] = static_cast<float>(k.k2);
        },
        stream);
    if (err != cudaSuccess || dx == nullptr) return err;
    return map_over(
        M * C,
        [=] __device__(int64_t i) {
          const int64_t c = i % C;
          const float xc = load_f32(x[i]) - mean[c];
          dx[i] = store_f32<T>(bn_backward_dx(k1[c], mdy[c], k2[c], load_f32(dy[i]), xc));
        },
        stream);
  });
}

cudaError_t batch_norm_eval_stats_cuda(const float* running_mean, const float* running_var,
                                       float* mean, float* invstd, int64_t C, double eps,
                                       cudaStream_t stream) {
  return map_over(
      C,
      [=] __device__(int64_t c) {
        mean[c] = running_mean[c];
        invstd[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(running_var[c]) + eps));
      },
      stream);
}

cudaError_t bn_fold_cuda(const float* gamma, const float* beta, const float* running_mean,
                         const float* running_var, float* scale, float* shift, int64_t C,
                         double eps, cudaStream_t stream) {
  return map_over(
      C,
      [=] __device__(int64_t c) {
        const BnFold f = bn_fold(gamma[c], beta[c], running_mean[c], running_var[c], eps);
        scale[c] = static_cast<float>(f.scale);
        shift[c] = static_cast<float>(f.shift);
      },
      stream);
}

#define RZ_INSTANTIATE(T)                                                                         \
  template cudaError_t batch_norm_fwd_train_cuda<T>(const T*, const float*, const float*, T*,     \
                                                    float*, float*, float*, float*, int64_t,      \
                                                    int64_t, double, double, cudaStream_t);       \
  template cudaError_t batch_norm_fwd_eval_cuda<T>(const T*, const float*, const float*,          \
                                                   const float*, const float*, T*, int64_t,       \
                                                   int64_t, double, cudaStream_t);                \
  template cudaError_t batch_norm_bwd_cuda<T>(const T*, const T*, const float*, const float*,     \
                                              const float*, T*, float*, float*, int64_t, int64_t, \
                                              bool, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
