// Multi-tensor fused SGD / Adam (scheme in optim.cuh).
// v1: 256 threads per block, one chunk of kMultiTensorChunk elements per block
// iteration, plain fp32 loads/stores (no vectorization: tensors may have any
// size and alignment offset).
#include "kernels/cuda/optim.cuh"

namespace rz {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t{65535} * 8;

// Coefficients by value (the step's scalars baked into the launch) or from
// device memory (read at run time: a captured CUDA graph replays with the
// scalars the host staged for this step).
template <typename C> __device__ __forceinline__ C coeffs_of(const C& c) { return c; }
template <typename C> __device__ __forceinline__ C coeffs_of(const C* c) { return *c; }

// A step gate closed by a non-finite value (uniform across the grid).
__device__ __forceinline__ bool gate_closed(const float* gate) {
  return gate != nullptr && !isfinite(*gate);
}

template <typename Src>
__global__ void __launch_bounds__(kThreads) sgd_multi_kernel(TensorList list, Src src,
                                                              const float* gate) {
  if (gate_closed(gate)) return;
  const SgdCoeffs<float> c = coeffs_of(src);
  for (int64_t chunk = blockIdx.x; chunk < list.total_chunks; chunk += gridDim.x) {
    const ChunkRange r = locate_chunk(list, chunk);
    const float* grad = list.grads[r.tensor];
    if (grad == nullptr) continue;  // uniform across the block
    float* param = list.params[r.tensor];
    float* buf = c.use_momentum ? list.state1[r.tensor] : nullptr;
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
      float p = param[i];
      float b = buf != nullptr ? buf[i] : 0.0f;
      sgd_update(p, grad[i], b, c);
      param[i] = p;
      if (buf != nullptr) buf[i] = b;
    }
  }
}

template <typename Src>
__global__ void __launch_bounds__(kThreads) adam_multi_kernel(TensorList list, Src src,
                                                               const float* gate) {
  if (gate_closed(gate)) return;
  const AdamCoeffs<float> c = coeffs_of(src);
  for (int64_t chunk = blockIdx.x; chunk < list.total_chunks; chunk += gridDim.x) {
    const ChunkRange r = locate_chunk(list, chunk);
    const float* grad = list.grads[r.tensor];
    if (grad == nullptr) continue;
    float* param = list.params[r.tensor];
    float* m = list.state1[r.tensor];
    float* v = list.state2[r.tensor];
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
      float p = param[i], mi = m[i], vi = v[i];
      adam_update(p, grad[i], mi, vi, c);
      param[i] = p;
      m[i] = mi;
      v[i] = vi;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    ema_kernel(float* ema, const float* value, int64_t n, float decay, const float* gate) {
  if (gate_closed(gate)) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    ema[i] = ema_blend(ema[i], value[i], decay);
}

bool list_ok(const TensorList& list) {
  if (list.count < 0 || list.total_chunks < 0) return false;
  if (list.total_chunks == 0) return true;
  return list.count > 0 && list.params != nullptr && list.grads != nullptr &&
         list.sizes != nullptr && list.chunk_offsets != nullptr;
}

unsigned grid_for(int64_t chunks) {
  return static_cast<unsigned>(chunks < kMaxGrid ? chunks : kMaxGrid);
}

}  // namespace

cudaError_t sgd_step_multi_cuda(const TensorList& list, const SgdHyper& h, bool first_step,
                                cudaStream_t stream) {
  if (!list_ok(list)) return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaSuccess;
  const SgdCoeffs<float> c = make_sgd_coeffs<float>(h, first_step);
  if (c.use_momentum && list.state1 == nullptr) return cudaErrorInvalidValue;
  sgd_multi_kernel<<<grid_for(list.total_chunks), kThreads, 0, stream>>>(list, c, nullptr);
  return cudaGetLastError();
}

cudaError_t adam_step_multi_cuda(const TensorList& list, const AdamHyper& h, int64_t step,
                                 cudaStream_t stream) {
  if (!list_ok(list) || step < 1) return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaSuccess;
  if (list.state1 == nullptr || list.state2 == nullptr) return cudaErrorInvalidValue;
  const AdamCoeffs<float> c = make_adam_coeffs<float>(h, step);
  adam_multi_kernel<<<grid_for(list.total_chunks), kThreads, 0, stream>>>(list, c, nullptr);
  return cudaGetLastError();
}

cudaError_t sgd_step_multi_dev_cuda(const TensorList& list, const SgdCoeffs<float>* coeffs,
                                    bool use_momentum, const float* gate, cudaStream_t stream) {
  if (!list_ok(list) || coeffs == nullptr) return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaSuccess;
  if (use_momentum && list.state1 == nullptr) return cudaErrorInvalidValue;
  sgd_multi_kernel<<<grid_for(list.total_chunks), kThreads, 0, stream>>>(list, coeffs, gate);
  return cudaGetLastError();
}

cudaError_t adam_step_multi_dev_cuda(const TensorList& list, const AdamCoeffs<float>* coeffs,
                                     const float* gate, cudaStream_t stream) {
  if (!list_ok(list) || coeffs == nullptr) return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaSuccess;
  if (list.state1 == nullptr || list.state2 == nullptr) return cudaErrorInvalidValue;
  adam_multi_kernel<<<grid_for(list.total_chunks), kThreads, 0, stream>>>(list, coeffs, gate);
  return cudaGetLastError();
}

cudaError_t ema_blend_cuda(float* ema, const float* value, int64_t n, double decay,
                           const float* gate, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (ema == nullptr || value == nullptr))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const float d = static_cast<float>(decay);
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  ema_kernel<<<static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid), kThreads, 0, stream>>>(
      ema, value, n, d, gate);
  return cudaGetLastError();
}

}  // namespace rz
