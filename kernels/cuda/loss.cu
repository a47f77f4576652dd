// Fused losses (see loss.cuh for the reduction scheme).
//
// Memory traffic: BCE reads logits + targets (+ pos_weight, [L], cached) and
// writes dlogits: 2-3 words per element, tiny in practice ([batch, 11]).
// MSE reads a, b and writes da, db: 2-4 words per element over feature maps of
// millions of elements; bandwidth-bound, the double arithmetic is hidden.
// v1: grid-stride loops, 256 threads, at most 1024 blocks (fixed per n).
#include "kernels/cuda/loss.cuh"

#include "kernels/common/convert.h"
#include "kernels/common/loss_math.h"
#include "kernels/cuda/common.cuh"

namespace rz {

using cuda_common::block_sum;

namespace {

constexpr int kThreads = 256;     // pass 1 block size (a power of two)
constexpr int kMaxBlocks = 1024;  // pass 2 sums these with one block of kMaxBlocks threads

// Depends on n only, so the reduction tree (and the loss bits) never depend on
// the device.
int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < kMaxBlocks ? b : kMaxBlocks);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bce_fused_kernel(const T* logits, const float* targets, const float* pos_weight, T* dlogits,
                     double grad_scale, double* partials, int64_t rows, int64_t L) {
  const int64_t n = rows * L;
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float x = static_cast<float>(to_f64(logits[i]));
    const float y = targets[i];
    const float pw = pos_weight != nullptr ? pos_weight[i % L] : 1.0f;
    acc += static_cast<double>(bce_with_logits(x, y, pw));
    if (dlogits != nullptr)
      dlogits[i] = from_f64<T>(grad_scale * static_cast<double>(bce_with_logits_grad(x, y, pw)));
  }
  const double total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    mse_fused_kernel(const T* a, const T* b, T* da, T* db, double grad_scale, double* partials,
                     int64_t n) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double d = to_f64(a[i]) - to_f64(b[i]);
    acc += d * d;
    const double g = grad_scale * d;
    if (da != nullptr) da[i] = from_f64<T>(g);
    if (db != nullptr) db[i] = from_f64<T>(-g);
  }
  const double total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// One block of kMaxBlocks threads: loss_out = (sum of partials) / n.
__global__ void __launch_bounds__(kMaxBlocks)
    finish_mean_kernel(const double* partials, int count, double n, float* loss_out) {
  const double v = static_cast<int>(threadIdx.x) < count ? partials[threadIdx.x] : 0.0;
  const double total = block_sum<kMaxBlocks>(v);
  if (threadIdx.x == 0) *loss_out = static_cast<float>(total / n);
}

// Allocates the partials, runs `launch(partials, blocks)` then the final sum,
// and frees the partials on every path after a successful allocation.
template <typename Launch>
cudaError_t reduce_mean(int64_t n, float* loss_out, cudaStream_t stream, Launch launch) {
  const int blocks = blocks_for(n);
  double* partials = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&partials),
                                    static_cast<size_t>(blocks) * sizeof(double), stream);
  if (err != cudaSuccess) return err;
  launch(partials, blocks);
  err = cudaGetLastError();
  if (err == cudaSuccess) {
    finish_mean_kernel<<<1, kMaxBlocks, 0, stream>>>(partials, blocks, static_cast<double>(n),
                                                     loss_out);
    err = cudaGetLastError();
  }
  const cudaError_t free_err = cudaFreeAsync(partials, stream);
  return err != cudaSuccess ? err : free_err;
}

}  // namespace

template <typename T>
cudaError_t bce_with_logits_cuda(const T* logits, const float* targets, const float* pos_weight,
                                 T* dlogits, float dloss_scale, float* loss_out, int64_t rows,
                                 int64_t L, cudaStream_t stream) {
  if (rows <= 0 || L <= 0 || logits == nullptr || targets == nullptr || loss_out == nullptr)
    return cudaErrorInvalidValue;
  const int64_t n = rows * L;
  const double grad_scale = static_cast<double>(dloss_scale) / static_cast<double>(n);
  return reduce_mean(n, loss_out, stream, [&](double* partials, int blocks) {
    bce_fused_kernel<T><<<blocks, kThreads, 0, stream>>>(logits, targets, pos_weight, dlogits,
                                                         grad_scale, partials, rows, L);
  });
}

template <typename T>
cudaError_t mse_cuda(const T* a, const T* b, T* da, T* db, float dloss_scale, float* loss_out,
                     int64_t n, cudaStream_t stream) {
  if (n <= 0 || a == nullptr || b == nullptr || loss_out == nullptr) return cudaErrorInvalidValue;
  const double grad_scale = 2.0 * static_cast<double>(dloss_scale) / static_cast<double>(n);
  return reduce_mean(n, loss_out, stream, [&](double* partials, int blocks) {
    mse_fused_kernel<T><<<blocks, kThreads, 0, stream>>>(a, b, da, db, grad_scale, partials, n);
  });
}

#define RZ_INSTANTIATE(T)                                                                       \
  template cudaError_t bce_with_logits_cuda<T>(const T*, const float*, const float*, T*, float, \
                                               float*, int64_t, int64_t, cudaStream_t);         \
  template cudaError_t mse_cuda<T>(const T*, const T*, T*, T*, float, float*, int64_t,          \
                                   cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
