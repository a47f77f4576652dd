// Reductions (see reduce.cuh for the determinism scheme).
//
// Memory traffic: sum and sum_squares read each element once; col_sum reads
// dy once (one thread per column walks the rows, so a warp reads 32
// consecutive columns of a row: coalesced); bias_add reads and writes y once;
// the scalar broadcasts read one word per element. All bandwidth-bound v1
// kernels with grid-stride loops.
#include "kernels/cuda/reduce.cuh"

#include "kernels/cuda/common.cuh"

namespace rz {

using namespace cuda_common;

namespace {

constexpr int kMaxPartials = 1024;  // the final pass sums these with one block of 1024 threads

// Depends on n only (never on the device): the reduction order is fixed.
int partial_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b < kMaxPartials ? b : kMaxPartials));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const T* x, int64_t n, double* partials) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    acc += static_cast<double>(load_f32(x[i]));
  const double total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// One block of kMaxPartials threads: thread t adds partials t, t + 1024, ...
// in order, then the fixed tree. Writes the total as float and/or double.
__global__ void __launch_bounds__(kMaxPartials)
    finish_sum_kernel(const double* partials, int64_t count, float* out_f, double* out_d) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kMaxPartials) acc += partials[i];
  const double total = block_sum<kMaxPartials>(acc);
  if (threadIdx.x == 0) {
    if (out_f != nullptr) *out_f = static_cast<float>(total);
    if (out_d != nullptr) *out_d = total;
  }
}

// One block per chunk (grid-strided): partials[chunk] = sum of squares of the
// chunk's elements (0 for skipped tensors).
__global__ void __launch_bounds__(kThreads) sumsq_chunks_kernel(TensorList list, double* partials) {
  for (int64_t chunk = blockIdx.x; chunk < list.total_chunks; chunk += gridDim.x) {
    const ChunkRange r = locate_chunk(list, chunk);
    const float* g = list.grads[r.tensor];
    double acc = 0.0;
    if (g != nullptr)  // uniform across the block
      for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
        const double v = static_cast<double>(g[i]);
        acc += v * v;
      }
    const double total = block_sum<kThreads>(acc);
    if (threadIdx.x == 0) partials[chunk] = total;
  }
}

__global__ void __launch_bounds__(kThreads)
    clip_scale_kernel(TensorList list, const double* sumsq, double max_norm) {
  const double coef = max_norm / (sqrt(*sumsq) + 1e-6);
  if (!(coef < 1.0)) return;  // uniform: every block reads the same value
  const float c = static_cast<float>(coef);
  for (int64_t chunk = blockIdx.x; chunk < list.total_chunks; chunk += gridDim.x) {
    const ChunkRange r = locate_chunk(list, chunk);
    float* g = const_cast<float*>(list.grads[r.tensor]);
    if (g == nullptr) continue;
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) g[i] *= c;
  }
}

unsigned chunk_grid(int64_t chunks) {
  constexpr int64_t kMaxGrid = int64_t{65535} * 8;
  return static_cast<unsigned>(chunks < 1 ? 1 : (chunks < kMaxGrid ? chunks : kMaxGrid));
}

bool list_ok(const TensorList& list) {
  if (list.count < 0 || list.total_chunks < 0) return false;
  if (list.total_chunks == 0) return true;
  return list.count > 0 && list.grads != nullptr && list.sizes != nullptr &&
         list.chunk_offsets != nullptr;
}

}  // namespace

template <typename T>
cudaError_t sum_cuda(const T* x, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0 || out == nullptr || (n > 0 && x == nullptr)) return cudaErrorInvalidValue;
  const int blocks = partial_blocks(n);
  double* partials = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&partials),
                                    static_cast<size_t>(blocks) * sizeof(double), stream);
  if (err != cudaSuccess) return err;
  sum_partials_kernel<T><<<blocks, kThreads, 0, stream>>>(x, n, partials);
  err = cudaGetLastError();
  if (err == cudaSuccess) {
    finish_sum_kernel<<<1, kMaxPartials, 0, stream>>>(partials, blocks, out, nullptr);
    err = cudaGetLastError();
  }
  const cudaError_t free_err = cudaFreeAsync(partials, stream);
  return err != cudaSuccess ? err : free_err;
}

template <typename T>
cudaError_t col_sum_cuda(const T* dy, int64_t rows, int64_t cols, float* db, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || (cols > 0 && db == nullptr) || (rows * cols > 0 && dy == nullptr))
    return cudaErrorInvalidValue;
  return launch_map(cols, stream, [=] __device__(int64_t c) {
    double acc = 0.0;
    for (int64_t r = 0; r < rows; ++r) acc += static_cast<double>(load_f32(dy[r * cols + c]));
    db[c] = static_cast<float>(acc);
  });
}

template <typename T>
cudaError_t bias_add_cuda(T* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || (rows * cols > 0 && (y == nullptr || b == nullptr)))
    return cudaErrorInvalidValue;
  return launch_map(rows * cols, stream, [=] __device__(int64_t i) {
    y[i] = store_f32<T>(load_f32(y[i]) + b[i % cols]);
  });
}

template <typename T>
cudaError_t scale_by_scalar_cuda(const T* x, const float* s, T* y, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (x == nullptr || s == nullptr || y == nullptr)))
    return cudaErrorInvalidValue;
  return launch_map(n, stream,
                    [=] __device__(int64_t i) { y[i] = store_f32<T>(load_f32(x[i]) * s[0]); });
}

template <typename T>
cudaError_t fill_from_scalar_cuda(T* y, const float* s, int64_t n, cudaStream_t stream) {
  if (n < 0 || (n > 0 && (s == nullptr || y == nullptr))) return cudaErrorInvalidValue;
  return launch_map(n, stream, [=] __device__(int64_t i) { y[i] = store_f32<T>(s[0]); });
}

cudaError_t sum_squares_multi_cuda(const TensorList& list, double* partials, double* out,
                                   cudaStream_t stream) {
  if (!list_ok(list) || out == nullptr || (list.total_chunks > 0 && partials == nullptr))
    return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaMemsetAsync(out, 0, sizeof(double), stream);
  sumsq_chunks_kernel<<<chunk_grid(list.total_chunks), kThreads, 0, stream>>>(list, partials);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  finish_sum_kernel<<<1, kMaxPartials, 0, stream>>>(partials, list.total_chunks, nullptr, out);
  return cudaGetLastError();
}

cudaError_t clip_scale_multi_cuda(const TensorList& list, const double* sumsq, double max_norm,
                                  cudaStream_t stream) {
  if (!list_ok(list) || sumsq == nullptr || !(max_norm >= 0)) return cudaErrorInvalidValue;
  if (list.total_chunks == 0) return cudaSuccess;
  clip_scale_kernel<<<chunk_grid(list.total_chunks), kThreads, 0, stream>>>(list, sumsq, max_norm);
  return cudaGetLastError();
}

#define RZ_INSTANTIATE(T)                                                                          \
  template cudaError_t sum_cuda<T>(const T*, int64_t, float*, cudaStream_t);                       \
  template cudaError_t col_sum_cuda<T>(const T*, int64_t, int64_t, float*, cudaStream_t);          \
  template cudaError_t bias_add_cuda<T>(T*, const float*, int64_t, int64_t, cudaStream_t);         \
  template cudaError_t scale_by_scalar_cuda<T>(const T*, const float*, T*, int64_t, cudaStream_t); \
  template cudaError_t fill_from_scalar_cuda<T>(T*, const float*, int64_t, cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
