// Elementwise activations (v1). Memory traffic: forward reads x and writes y
// (2n elements), backward reads y, dy and writes dx (3n); bandwidth-bound, so
// a grid-stride loop with 256 threads per block is all there is. The math is
// the RZ_HD functions of kernels/common/activation_math.h, the same the CPU
// twins call, evaluated in fp32 (bf16 is widened on load, rounded on store).
// No restrict qualifiers: in-place use (y == x, dx == dy) is allowed.
#include "kernels/cuda/activation.cuh"

#include "kernels/cuda/common.cuh"

#include "kernels/common/activation_math.h"

namespace rz {

using namespace cuda_common;

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
