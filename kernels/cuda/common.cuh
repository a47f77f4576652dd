// Device helpers every CUDA kernel file shares: the block size of the simple
// (v1) kernels, fp32 <-> storage conversions, and a grid-stride "map" launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz::cuda_common {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_f32(float v) { return v; }
__device__ __forceinline__ float load_f32(bf16 v) { return bf16_to_f32(v); }

template <typename T> __device__ __forceinline__ T store_f32(float v);
template <> __device__ __forceinline__ float store_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 store_f32<bf16>(float v) { return f32_to_bf16(v); }

// Blocks for n one-element-per-thread items, capped (the loops grid-stride).
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  constexpr int64_t kMaxBlocks = int64_t{65535} * 8;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

template <typename F> __global__ void __launch_bounds__(kThreads) map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    f(i);
}

// Runs f(i) for i in [0, n) on `stream`; returns the launch status.
template <typename F> cudaError_t launch_map(int64_t n, cudaStream_t stream, F f) {
  if (n <= 0) return cudaSuccess;
  map_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, f);
  return cudaGetLastError();
}

// Fixed-order tree sum over a block of `Threads` threads (a power of two, the
// block size); every thread gets the total. The order of additions depends on
// the block size only, so reductions built on it are bitwise reproducible.
template <int Threads> __device__ double block_sum(double v) {
  __shared__ double s[Threads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int half = Threads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) s[threadIdx.x] += s[threadIdx.x + half];
    __syncthreads();
  }
  const double total = s[0];
  __syncthreads();  // the shared slots may be reused by a following call
  return total;
}

// Allocates `bytes` from the stream-ordered pool, runs run(base) (which
// enqueues work and returns its first error) and frees on the same stream,
// even when a launch failed. Capturable: inside a CUDA graph capture the
// allocation becomes a graph memory node.
template <typename F>
cudaError_t with_workspace_bytes(size_t bytes, cudaStream_t stream, F run) {
  void* ws = nullptr;
  cudaError_t err = cudaMallocAsync(&ws, bytes > 0 ? bytes : 1, stream);
  if (err != cudaSuccess) return err;
  err = run(ws);
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  return err != cudaSuccess ? err : free_err;
}

// The same for `count` elements of X: run(X* base).
template <typename X, typename F>
cudaError_t with_stream_workspace(size_t count, cudaStream_t stream, F run) {
  return with_workspace_bytes(count * sizeof(X), stream,
                              [&](void* base) { return run(static_cast<X*>(base)); });
}

}  // namespace rz::cuda_common
