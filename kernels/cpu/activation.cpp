// Elementwise activations: pure streaming, one read per input and one write
// per output element (relu/sigmoid fwd 2n, bwd 3n elements of traffic); memory
// bound, so the only tuning is threads for large n. Results are per element
// and thus independent of the thread count.
#include "kernels/cpu/activation.h"

#include "kernels/common/activation_math.h"

namespace rz {

namespace {
// Below this many elements thread start-up costs more than the loop.
constexpr int64_t kParallelMin = int64_t{1} << 15;
}  // namespace

template <class T>
void relu_fwd_cpu(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = relu(x[i]);
}

template <class T>
void relu_bwd_cpu(const T* y, const T* dy, T* dx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = relu_grad_from_output(y[i], dy[i]);
}

template <class T>
void sigmoid_fwd_cpu(const T* x, T* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
}

template <class T>
void sigmoid_bwd_cpu(const T* y, const T* dy, T* dx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = sigmoid_grad_from_output(y[i], dy[i]);
}

#define RZ_INSTANTIATE(T)                                         \
  template void relu_fwd_cpu<T>(const T*, T*, int64_t);           \
  template void relu_bwd_cpu<T>(const T*, const T*, T*, int64_t); \
  template void sigmoid_fwd_cpu<T>(const T*, T*, int64_t);        \
  template void sigmoid_bwd_cpu<T>(const T*, const T*, T*, int64_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
