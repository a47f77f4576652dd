// Memory traffic: one read per input, one write per output element; a
// grid-stride loop with 256 threads per block keeps these bandwidth-bound
// kernels simple (v1). Per-element math is shared with the CPU twins through
// kernels/common/convert.h.
#include "kernels/cuda/elementwise.cuh"

#include "kernels/common/convert.h"
#include "kernels/cuda/common.cuh"

namespace rz {

using namespace cuda_common;

// The type elementwise math is done in: fp32 for bf16 storage, else T itself.
template <typename T> struct ComputeType { using type = T; };
template <> struct ComputeType<bf16> { using type = float; };

template <typename T> __device__ __forceinline__ typename ComputeType<T>::type up(T v) {
  return convert_element<T, typename ComputeType<T>::type>(v);
}
template <typename T> __device__ __forceinline__ T down(typename ComputeType<T>::type v) {
  return convert_element<typename ComputeType<T>::type, T>(v);
}

template <typename T> cudaError_t fill_cuda(T* y, T value, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) { y[i] = value; });
}
template <typename T>
cudaError_t axpy_cuda(double alpha, const T* x, T* y, int64_t n, cudaStream_t stream) {
  using A = typename ComputeType<T>::type;
  const A a = static_cast<A>(alpha);
  return launch_map(n, stream, [=] __device__(int64_t i) { y[i] = down<T>(up(y[i]) + a * up(x[i])); });
}
template <typename T> cudaError_t scale_cuda(T* y, double alpha, int64_t n, cudaStream_t stream) {
  using A = typename ComputeType<T>::type;
  const A a = static_cast<A>(alpha);
  return launch_map(n, stream, [=] __device__(int64_t i) { y[i] = down<T>(up(y[i]) * a); });
}
template <typename T>
cudaError_t add_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) { c[i] = down<T>(up(a[i]) + up(b[i])); });
}
template <typename T>
cudaError_t sub_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) { c[i] = down<T>(up(a[i]) - up(b[i])); });
}
template <typename T>
cudaError_t mul_cuda(const T* a, const T* b, T* c, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream, [=] __device__(int64_t i) { c[i] = down<T>(up(a[i]) * up(b[i])); });
}
template <typename S, typename D>
cudaError_t cast_cuda(const S* src, D* dst, int64_t n, cudaStream_t stream) {
  return launch_map(n, stream,
                    [=] __device__(int64_t i) { dst[i] = convert_element<S, D>(src[i]); });
}

#define RZ_INSTANTIATE_ARITH(T)                                                   \
  template cudaError_t fill_cuda<T>(T*, T, int64_t, cudaStream_t);                \
  template cudaError_t axpy_cuda<T>(double, const T*, T*, int64_t, cudaStream_t); \
  template cudaError_t scale_cuda<T>(T*, double, int64_t, cudaStream_t);          \
  template cudaError_t add_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t); \
  template cudaError_t sub_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t); \
  template cudaError_t mul_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t);
RZ_INSTANTIATE_ARITH(float)
RZ_INSTANTIATE_ARITH(double)
RZ_INSTANTIATE_ARITH(bf16)
template cudaError_t fill_cuda<uint8_t>(uint8_t*, uint8_t, int64_t, cudaStream_t);
template cudaError_t fill_cuda<int64_t>(int64_t*, int64_t, int64_t, cudaStream_t);

#define RZ_INSTANTIATE_CAST_FROM(S)                                                \
  template cudaError_t cast_cuda<S, float>(const S*, float*, int64_t, cudaStream_t);   \
  template cudaError_t cast_cuda<S, double>(const S*, double*, int64_t, cudaStream_t); \
  template cudaError_t cast_cuda<S, bf16>(const S*, bf16*, int64_t, cudaStream_t);     \
  template cudaError_t cast_cuda<S, uint8_t>(const S*, uint8_t*, int64_t, cudaStream_t); \
  template cudaError_t cast_cuda<S, int64_t>(const S*, int64_t*, int64_t, cudaStream_t);
RZ_INSTANTIATE_CAST_FROM(float)
RZ_INSTANTIATE_CAST_FROM(double)
RZ_INSTANTIATE_CAST_FROM(bf16)
RZ_INSTANTIATE_CAST_FROM(uint8_t)
RZ_INSTANTIATE_CAST_FROM(int64_t)

}  // namespace rz
