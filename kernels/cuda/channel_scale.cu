// SE channel scale (v1).
// Memory traffic: forward reads x and writes y (2 N*HW*C elements; s, N*C, is
// served from L1/L2). Backward is one fused pass: each thread reads dy and x
// once, writes dx and keeps its ds partial in a register (3 N*HW*C elements,
// plus N*C writes of ds).
// Backward grid: blockIdx.x = tile of kTileC channels (threadIdx.x), blockIdx.y
// = image (looping when N > 65535), threadIdx.y = one of kRowLanes row lanes
// that takes rows hw = lane, lane + kRowLanes, ... in order. A warp therefore
// reads 32 consecutive channels of one row (coalesced). The lanes' fp32 sums
// are combined by a fixed tree in shared memory (no atomics, deterministic).
// v1 limit: only ceil(C/32) * N blocks, so a small N*C with a large HW runs
// on few SMs; a v2 would split HW into chunks with a second combine pass.
#include "kernels/cuda/channel_scale.cuh"

#include "kernels/cuda/common.cuh"

namespace rz {

namespace {

using namespace cuda_common;

constexpr int kTileC = 32;
constexpr int kRowLanes = 8;  // kTileC * kRowLanes == kThreads; a power of two



template <typename T>
__global__ void __launch_bounds__(kThreads)
    channel_scale_fwd_kernel(const T* x, const T* s, T* y, int64_t HW, int64_t C, int64_t total) {
  const int64_t hwc = HW * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t n = i / hwc, c = i % C;
    y[i] = store_f32<T>(load_f32(x[i]) * load_f32(s[n * C + c]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    channel_scale_bwd_kernel(const T* x, const T* s, const T* dy, T* dx, T* ds, int64_t N,
                             int64_t HW, int64_t C) {
  __shared__ float part[kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileC + tx;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    float acc = 0.0f;
    if (c < C) {
      const float sc = load_f32(s[n * C + c]);
      for (int64_t hw = ty; hw < HW; hw += kRowLanes) {
        const int64_t off = (n * HW + hw) * C + c;
        const float g = load_f32(dy[off]);
        if (dx != nullptr) dx[off] = store_f32<T>(g * sc);
        if (ds != nullptr) acc += g * load_f32(x[off]);
      }
    }
    if (ds != nullptr) {  // uniform over the grid: every thread takes the same branch
      part[ty][tx] = acc;
      __syncthreads();
      for (int half = kRowLanes / 2; half > 0; half /= 2) {
        if (ty < half) part[ty][tx] += part[ty + half][tx];
        __syncthreads();
      }
      if (ty == 0 && c < C) ds[n * C + c] = store_f32<T>(part[0][tx]);
      __syncthreads();  // part is reused by the next image
    }
  }
}

}  // namespace

template <typename T>
cudaError_t channel_scale_fwd_cuda(const T* x, const T* s, T* y, int64_t N, int64_t HW, int64_t C,
                                   cudaStream_t stream) {
  const int64_t total = N * HW * C;
  if (total <= 0) return cudaSuccess;
  channel_scale_fwd_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(x, s, y, HW, C, total);
  return cudaGetLastError();
}

template <typename T>
cudaError_t channel_scale_bwd_cuda(const T* x, const T* s, const T* dy, T* dx, T* ds, int64_t N,
                                   int64_t HW, int64_t C, cudaStream_t stream) {
  if ((dx == nullptr && ds == nullptr) || N <= 0 || C <= 0) return cudaSuccess;
  // HW == 0 still runs: ds is written as zeros, like the CPU twin.
  const dim3 block(kTileC, kRowLanes);
  const dim3 grid(static_cast<unsigned>((C + kTileC - 1) / kTileC),
                  static_cast<unsigned>(N < 65535 ? N : 65535));
  channel_scale_bwd_kernel<T><<<grid, block, 0, stream>>>(x, s, dy, dx, ds, N, HW, C);
  return cudaGetLastError();
}

#define RZ_INSTANTIATE(T)                                                                       \
  template cudaError_t channel_scale_fwd_cuda<T>(const T*, const T*, T*, int64_t, int64_t,      \
                                                 int64_t, cudaStream_t);                        \
  template cudaError_t channel_scale_bwd_cuda<T>(const T*, const T*, const T*, T*, T*, int64_t, \
                                                 int64_t, int64_t, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
