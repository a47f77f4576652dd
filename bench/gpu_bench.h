// Shared pieces of the GPU benchmarks (DESIGN decision 11): warm-up, CUDA
// events, medians, an L2 flush between timed runs, the device's measured HBM
// bandwidth and its nominal tensor-core peak, so every benchmark reports time,
// achieved GB/s or TFLOP/s and the fraction of the device's peak the same way.
//
//   rz::bench::GpuTiming t = rz::bench::time_gpu(stream, [&] { launch(...); });
//   std::printf("%.3f ms  %.0f GB/s\n", t.median_ms, bytes / (t.median_ms * 1e6));
//
// In a build without CUDA only `have_gpu()` and `skip_without_gpu()` are
// usable (no device is ever found).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/device.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif

namespace rz::bench {

inline bool have_gpu() { return cuda_device_count() > 0; }

// What a GPU benchmark does where it cannot run: prints one line naming the
// program and returns true (the caller then exits 0, so scripts that run every
// benchmark keep going on machines without a GPU).
inline bool skip_without_gpu(const char* program) {
  if (have_gpu()) return false;
  std::printf("%s: no usable CUDA device (no GPU, or a build without CUDA); nothing to benchmark\n",
              program);
  return true;
}

#if defined(RZ_HAVE_CUDA)

struct GpuTiming {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int runs = 0;
};

// A buffer larger than any L2 (H100: 50 MB, H200: 60 MB); writing it between
// timed runs evicts the operands so each run reads from HBM, like a layer
// inside a real network whose inputs were produced long before.
class L2Flusher {
 public:
  L2Flusher() { RZ_CUDA_CHECK(cudaMalloc(&buf_, kBytes)); }
  ~L2Flusher() { cudaFree(buf_); }
  L2Flusher(const L2Flusher&) = delete;
  L2Flusher& operator=(const L2Flusher&) = delete;
  void flush(cudaStream_t stream) { RZ_CUDA_CHECK(cudaMemsetAsync(buf_, 0, kBytes, stream)); }

 private:
  static constexpr size_t kBytes = size_t{256} << 20;
  void* buf_ = nullptr;
};

// Runs `fn` (which issues work on `stream`) `warmup` times, then `runs` times,
// each bracketed by events with the L2 flushed before it (when flush_l2).
// Returns the median, min and max of the event times. Throws on a CUDA error.
template <typename F>
GpuTiming time_gpu(cudaStream_t stream, F&& fn, int warmup = 3, int runs = 20, bool flush_l2 = true) {
  L2Flusher flusher;
  cudaEvent_t start, stop;
  RZ_CUDA_CHECK(cudaEventCreate(&start));
  RZ_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn();
  RZ_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    if (flush_l2) flusher.flush(stream);
    RZ_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    RZ_CUDA_CHECK(cudaEventRecord(stop, stream));
    RZ_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    RZ_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  GpuTiming r;
  r.runs = runs;
  r.median_ms = ms.empty() ? 0 : ms[ms.size() / 2];
  r.min_ms = ms.empty() ? 0 : ms.front();
  r.max_ms = ms.empty() ? 0 : ms.back();
  return r;
}

// Measured device-memory bandwidth in GB/s (1e9 bytes/s): the median of
// device-to-device copies of 1 GiB, counting read + write bytes. This is the
// denominator of every "fraction of HBM bandwidth" the benchmarks print, so
// memory-bound kernels are compared with what the memory system delivers on
// this very device, not with the datasheet.
inline double measured_hbm_gbps(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  RZ_CUDA_CHECK(cudaMalloc(&a, bytes));
  RZ_CUDA_CHECK(cudaMalloc(&b, bytes));
  RZ_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, stream));
  const GpuTiming t = time_gpu(
      stream, [&] { RZ_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); },
      2, 10, false);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (t.median_ms * 1e6);
}

// Nominal dense bf16 tensor-core peak in TFLOP/s for the GPUs we report on
// (datasheet values, dense, no sparsity), by compute capability and SM count;
// 0 when unknown (the benchmarks then print no fraction). H100 SXM: 989;
// H100 PCIe (114 SMs): 756; H200: 989 (same SXM GH100 compute); A100: 312.
inline double nominal_bf16_tflops(const cudaDeviceProp& p) {
  if (p.major == 9 && p.minor == 0) return p.multiProcessorCount >= 132 ? 989.0 : 756.0;
  if (p.major == 8 && p.minor == 0) return 312.0;
  return 0.0;
}

// High-water mark of the device's default memory pool, the pool that
// cudaMallocAsync (and so every engine tensor, Storage) allocates from:
// reset_pool_peak() starts a new measurement at the bytes in use now,
// pool_peak_bytes() reads the maximum in use since. Memory from plain
// cudaMalloc (cuBLAS/cuDNN internals, L2Flusher) is not counted.
inline cudaMemPool_t default_mem_pool(int device = 0) {
  cudaMemPool_t pool = nullptr;
  RZ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  return pool;
}
inline void reset_pool_peak(int device = 0) {
  uint64_t zero = 0;  // cuuint64_t (cuda.h); only 0 is accepted: "reset to the current use"
  RZ_CUDA_CHECK(
      cudaMemPoolSetAttribute(default_mem_pool(device), cudaMemPoolAttrUsedMemHigh, &zero));
}
inline size_t pool_peak_bytes(int device = 0) {
  uint64_t v = 0;  // the attribute type, cuuint64_t, is a 64-bit unsigned
  RZ_CUDA_CHECK(
      cudaMemPoolGetAttribute(default_mem_pool(device), cudaMemPoolAttrUsedMemHigh, &v));
  return static_cast<size_t>(v);
}
// The same high-water mark for the memory that CUDA graphs allocate inside a
// capture (cudaMallocAsync nodes live in the device's graph memory, not in
// the default pool): a captured step's activations are counted here.
inline void reset_graph_mem_peak(int device = 0) {
  uint64_t zero = 0;
  RZ_CUDA_CHECK(cudaDeviceSetGraphMemAttribute(device, cudaGraphMemAttrUsedMemHigh, &zero));
}
inline size_t graph_mem_peak_bytes(int device = 0) {
  uint64_t v = 0;
  RZ_CUDA_CHECK(cudaDeviceGetGraphMemAttribute(device, cudaGraphMemAttrUsedMemHigh, &v));
  return static_cast<size_t>(v);
}
inline size_t pool_used_bytes(int device = 0) {
  uint64_t v = 0;  // the attribute type, cuuint64_t, is a 64-bit unsigned
  RZ_CUDA_CHECK(
      cudaMemPoolGetAttribute(default_mem_pool(device), cudaMemPoolAttrUsedMemCurrent, &v));
  return static_cast<size_t>(v);
}

inline std::string device_line(int device = 0) {
  cudaDeviceProp p{};
  RZ_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  char buf[sizeof(p.name) + 128];  // room for the whole name (256 chars) and the numbers
  std::snprintf(buf, sizeof buf, "%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor,
                p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1u << 30));
  return buf;
}

#endif  // RZ_HAVE_CUDA

}  // namespace rz::bench
