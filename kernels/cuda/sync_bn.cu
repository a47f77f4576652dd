// Synchronized batch norm pieces (see sync_bn.cuh). Memory traffic: the sums
// read x once (forward) or x and dy once (backward); dx reads x and dy and
// writes dx; the per-channel work is negligible next to that.
#include "kernels/cuda/sync_bn.cuh"

#include "kernels/common/bn_math.h"
#include "kernels/cuda/common.cuh"

namespace rz {

namespace {

using namespace cuda_common;

constexpr int kTile = 32;
constexpr int64_t kRowsPerChunk = 256;
constexpr int64_t kMaxChunks = 128;

int64_t chunk_count(int64_t M) {
  const int64_t n = (M + kRowsPerChunk - 1) / kRowsPerChunk;
  return n < 1 ? 1 : (n > kMaxChunks ? kMaxChunks : n);
}

// partial[(chunk * 2 + k) * C + c] = sum over the chunk's rows of f(r, c)[k].
template <typename F>
__global__ void chunk_sums_kernel(int64_t M, int64_t C, int64_t rows, F f, double* partial) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows;
  const int64_t r1 = r0 + rows < M ? r0 + rows : M;
  double a = 0.0, b = 0.0;
  for (int64_t r = r0; r < r1; ++r) f(r, c, a, b);
  partial[(blockIdx.y * 2 + 0) * C + c] = a;
  partial[(blockIdx.y * 2 + 1) * C + c] = b;
}

__global__ void add_chunks_kernel(const double* partial, int64_t chunks, int64_t C, double* sums) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  double a = 0.0, b = 0.0;
  for (int64_t k = 0; k < chunks; ++k) {
    a += partial[(k * 2 + 0) * C + c];
    b += partial[(k * 2 + 1) * C + c];
  }
  sums[c] = a;
  sums[C + c] = b;
}

template <typename F>
cudaError_t column_sums(int64_t M, int64_t C, F f, double* sums, cudaStream_t stream) {
  if (C <= 0) return cudaSuccess;
  const int64_t chunks = chunk_count(M);
  const int64_t rows = M > 0 ? (M + chunks - 1) / chunks : 1;
  return with_stream_workspace<double>(static_cast<size_t>(chunks * 2 * C), stream, [&](double* partial) {
    const dim3 grid(static_cast<unsigned>((C + kTile - 1) / kTile), static_cast<unsigned>(chunks));
    chunk_sums_kernel<<<grid, kTile, 0, stream>>>(M, C, rows, f, partial);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    add_chunks_kernel<<<static_cast<unsigned>((C + kThreads - 1) / kThreads), kThreads, 0, stream>>>(partial, chunks,
                                                                                                     C, sums);
    return cudaGetLastError();
  });
}

}  // namespace

template <typename T>
cudaError_t sync_bn_sums_cuda(const T* x, int64_t M, int64_t C, double* sums, cudaStream_t stream) {
  const cudaError_t err = column_sums(
      M, C,
      [=] __device__(int64_t r, int64_t c, double& a, double& b) {
        const double v = load_f32(x[r * C + c]);
        a += v;
        b += v * v;
      },
      sums, stream);
  if (err != cudaSuccess) return err;
  const double m = static_cast<double>(M);
  return launch_map(1, stream, [=] __device__(int64_t) { sums[2 * C] = m; });
}

cudaError_t sync_bn_stats_cuda(const double* sums, int64_t C, double momentum, float* mean, float* var,
                               float* running_mean, float* running_var, cudaStream_t stream) {
  return launch_map(C, stream, [=] __device__(int64_t c) {
    const double n = sums[2 * C];
    const BnBatchStats s = bn_stats_from_sums(sums[c], sums[C + c], n);
    mean[c] = static_cast<float>(s.mean);
    var[c] = static_cast<float>(s.var);
    if (running_mean) {
      double rm = running_mean[c], rv = running_var[c];
      bn_running_update(s.mean, s.var, n, momentum, &rm, &rv);
      running_mean[c] = static_cast<float>(rm);
      running_var[c] = static_cast<float>(rv);
    }
  });
}

template <typename T>
cudaError_t sync_bn_grad_sums_cuda(const T* x, const T* dy, const float* mean, int64_t M, int64_t C,
                                   double* sums, cudaStream_t stream) {
  return column_sums(
      M, C,
      [=] __device__(int64_t r, int64_t c, double& a, double& b) {
        const double g = load_f32(dy[r * C + c]);
        a += g;
        b += g * (static_cast<double>(load_f32(x[r * C + c])) - static_cast<double>(mean[c]));
      },
      sums, stream);
}

cudaError_t sync_bn_param_grads_cuda(const double* grad_sums, const float* invstd, int64_t C, float* dgamma,
                                     float* dbeta, cudaStream_t stream) {
  return launch_map(C, stream, [=] __device__(int64_t c) {
    if (dgamma) dgamma[c] = static_cast<float>(grad_sums[C + c] * static_cast<double>(invstd[c]));
    if (dbeta) dbeta[c] = static_cast<float>(grad_sums[c]);
  });
}

template <typename T>
cudaError_t sync_bn_grad_input_cuda(const T* x, const T* dy, const float* gamma, const float* mean,
                                    const float* invstd, const double* grad_sums, const double* count, int64_t M,
                                    int64_t C, T* dx, cudaStream_t stream) {
  return launch_map(M * C, stream, [=] __device__(int64_t i) {
    const int64_t c = i % C;
    const BnBackwardCoeffs q = bn_backward_coeffs(gamma[c], invstd[c], grad_sums[c], grad_sums[C + c],
                                                  1.0 / count[0], true);
    const float v = static_cast<float>(bn_backward_dx(q.k1, q.mdy, q.k2, static_cast<double>(load_f32(dy[i])),
                                                      static_cast<double>(load_f32(x[i])) - mean[c]));
    dx[i] = store_f32<T>(v);
  });
}

#define RZ_INSTANTIATE(T)                                                                                     \
  template cudaError_t sync_bn_sums_cuda<T>(const T*, int64_t, int64_t, double*, cudaStream_t);               \
  template cudaError_t sync_bn_grad_sums_cuda<T>(const T*, const T*, const float*, int64_t, int64_t, double*, \
                                                 cudaStream_t);                                               \
  template cudaError_t sync_bn_grad_input_cuda<T>(const T*, const T*, const float*, const float*,             \
                                                  const float*, const double*, const double*, int64_t,        \
                                                  int64_t, T*, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
