// Elementwise activations (v1). Memory traffic: forward reads x and writes y
// (2n elements), backward reads y, dy and writes dx (3n); bandwidth-bound, so
// a grid-stride loop with 256 threads per block is all there is. The math is
// the RZ_HD functions of kernels/common/activation_math.h, the same the CPU
// twins call, evaluated in fp32 (bf16 is widened on load, rounded on store).
// No restrict qualifiers: in-place use (y == x, dx == dy) is allowed.
#include "kernels/cuda/activation.cuh"

#include "kernels/common/activation_math.h"

namespace rz {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_f32(float v) {
  return v;
}
__device__ __forceinline__ float load_f32(bf16 v) {
  return bf16_to_f32(v);
}
template <typename T>
__device__ __forceinline__ T store_f32(float v);
template <>
__device__ __forceinline__ float store_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 store_f32<bf16>(float v) {
  return f32_to_bf16(v);
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  constexpr int64_t kMaxBlocks = int64_t{65535} * 8;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename F>
__global__ void __launch_bounds__(kThreads) map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    f(i);
}

template <typename F>
cudaError_t launch_map(int64_t n, cudaStream_t stream, F f) {
  if (n <= 0) return cudaSuccess;
  map_kernel<<<grid_for(n), kThreads, 0, stream>>>(n, f);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t relu_fwd_cuda(const T* x, T* y, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream,
                    [=] __device__(int64_t i) { y[i] = store_f32<T>(relu(load_f32(x[i]))); });
}

template <typename T>
cudaError_t relu_bwd_cuda(const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) {
    dx[i] = store_f32<T>(relu_grad_from_output(load_f32(y[i]), load_f32(dy[i])));
  });
}

template <typename T>
cudaError_t sigmoid_fwd_cuda(const T* x, T* y, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream,
                    [=] __device__(int64_t i) { y[i] = store_f32<T>(sigmoid(load_f32(x[i]))); });
}

template <typename T>
cudaError_t sigmoid_bwd_cuda(const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) {
    dx[i] = store_f32<T>(sigmoid_grad_from_output(load_f32(y[i]), load_f32(dy[i])));
  });
}

#define RZ_INSTANTIATE(T)                                                               \
  template cudaError_t relu_fwd_cuda<T>(const T*, T*, int64_t, cudaStream_t);           \
  template cudaError_t relu_bwd_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t); \
  template cudaError_t sigmoid_fwd_cuda<T>(const T*, T*, int64_t, cudaStream_t);        \
  template cudaError_t sigmoid_bwd_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
