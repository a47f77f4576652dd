// CudaContext: everything a CUDA launcher or library call needs, owned by the
// caller and passed explicitly (DESIGN decision 6: no mutable globals):
//   - the device index (made current with cudaSetDevice by every method that
//     touches the device),
//   - one non-blocking stream, NVTX-named so nsys shows it by name,
//   - a cuBLAS handle bound to that stream, a cuBLASLt handle (cuBLASLt has
//     no stream binding: pass stream() to every cublasLtMatmul), a cuDNN
//     handle bound to that stream,
//   - a grow-only workspace allocated stream-ordered (cudaMallocAsync), shared
//     by the cuDNN/cuBLAS wrappers (engine/cuda_conv.h, engine/cuda_gemm.h),
//   - the cuDNN convolution algorithm cache (one per context, since measured
//     choices belong to a device),
//   - the device properties.
// Work issued on stream() is asynchronous; synchronize() waits for it.
// Not thread-safe: one context per host thread that issues work.
//
// Also here: RZ_CUBLAS_CHECK / RZ_CUDNN_CHECK (next to RZ_CUDA_CHECK from
// engine/cuda_check.h), the RAII NvtxRange and profile_start()/profile_stop()
// (DESIGN decision 10).
//
// In a build without CUDA the header still compiles: constructing a context
// and calling profile_start()/profile_stop() throw rz::Error("built without
// CUDA"); NvtxRange is a no-op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/error.h"

#if defined(RZ_HAVE_CUDA)
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include "engine/cuda_check.h"

// Throws rz::Error with the expression, the cuBLAS status name and file:line.
#define RZ_CUBLAS_CHECK(expr)                                                           \
  do {                                                                                  \
    const cublasStatus_t rz_cublas_status_ = (expr);                                    \
    if (rz_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                     \
      RZ_THROW("cuBLAS call failed: " #expr ": ", cublasGetStatusString(rz_cublas_status_), \
               " (status ", static_cast<int>(rz_cublas_status_), ")");                  \
  } while (0)

// cuBLASLt returns cublasStatus_t as well; the same check applies.
#define RZ_CUBLASLT_CHECK(expr) RZ_CUBLAS_CHECK(expr)

// Throws rz::Error with the expression, the cuDNN error string and file:line.
#define RZ_CUDNN_CHECK(expr)                                                            \
  do {                                                                                  \
    const cudnnStatus_t rz_cudnn_status_ = (expr);                                      \
    if (rz_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                       \
      RZ_THROW("cuDNN call failed: " #expr ": ", cudnnGetErrorString(rz_cudnn_status_), \
               " (status ", static_cast<int>(rz_cudnn_status_), ")");                   \
  } while (0)
#endif

// The library handle types are pointers to these opaque structs (the same
// declarations as cuda_runtime/cublas/cudnn make), so the class below has one
// layout whether or not CUDA headers are visible.
struct CUstream_st;
struct cublasContext;
struct cublasLtContext;
struct cudnnContext;

namespace rz {

struct ConvAlgoCache;  // engine/cuda_conv.h

struct CudaDeviceProps {
  std::string name;                  // "NVIDIA H100 80GB HBM3"
  int sm_count = 0;                  // streaming multiprocessors
  int cc_major = 0, cc_minor = 0;    // compute capability, e.g. 9.0
  size_t total_memory_bytes = 0;     // global memory
  size_t l2_cache_bytes = 0;
  size_t shared_memory_per_sm_bytes = 0;
  std::string str() const;           // one line: name, sm_XY, SMs, memory
};

// Which convolution implementation the op front-ends use (engine/conv_autotune.h).
enum class ConvImpl : uint8_t { Cudnn, Native, Auto };

// Settings the op front-ends read from the engine context (see
// engine_cuda_context): how convolutions and GEMMs may trade exactness for
// speed, and which convolution kernels they run.
struct EngineCudaOptions {
  bool deterministic = false;  // cuDNN: only algorithms with bitwise-reproducible results
  bool allow_tf32 = false;     // fp32 convolutions and GEMMs may use TF32 tensor cores
  ConvImpl conv_impl = ConvImpl::Cudnn;
  bool allow_unvalidated_kernels = false;  // Auto may pick native variants no GPU run has validated
};

class CudaContext {
 public:
  // Which stream the context issues work on: its own non-blocking stream named
  // `stream_name`, or the per-thread default stream (cudaStreamPerThread) that
  // engine storage, copies and op front-ends use (see engine_cuda_context).
  enum class StreamKind : uint8_t { Owned, PerThreadDefault };

  // Makes `device` current, creates the named stream (or takes the per-thread
  // default one), the handles (bound to the stream) and reads the properties.
  // Throws rz::Error when the device is not usable (no GPU, bad index) or in a
  // build without CUDA.
  explicit CudaContext(int device = 0, const std::string& stream_name = "rz.main",
                       StreamKind kind = StreamKind::Owned);
  // Synchronizes the stream, frees the workspace and destroys the handles;
  // failures are logged to stderr, never thrown.
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  CUstream_st* stream() const { return stream_; }          // a cudaStream_t
  cublasContext* cublas() const { return cublas_; }         // a cublasHandle_t
  cublasLtContext* cublaslt() const { return cublaslt_; }   // a cublasLtHandle_t
  cudnnContext* cudnn() const { return cudnn_; }            // a cudnnHandle_t
  const CudaDeviceProps& props() const { return props_; }

  // A device buffer of at least `bytes`, valid for work issued on stream()
  // until the next workspace() call that grows it (growth frees the old buffer
  // stream-ordered, so work already queued on stream() is safe; work on other
  // streams must not hold on to it). Grow-only; bytes == 0 may return nullptr.
  void* workspace(size_t bytes);
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Makes device() current on the calling thread.
  void make_current() const;
  // Waits for all work issued on stream(); throws on an asynchronous error.
  void synchronize() const;

  ConvAlgoCache& conv_algo_cache() { return *conv_cache_; }

  // Read by the op front-ends for every convolution and GEMM they issue.
  EngineCudaOptions options;

 private:
  int device_ = 0;
  bool owns_stream_ = true;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  cublasLtContext* cublaslt_ = nullptr;
  cudnnContext* cudnn_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  void* cublas_workspace_ = nullptr;  // fixed, so cuBLAS never allocates (e.g. during graph capture)
  CudaDeviceProps props_;
  std::unique_ptr<ConvAlgoCache> conv_cache_;

  void release() noexcept;  // the destructor's work; also undoes a failed constructor
};

// The context the op front-ends (engine/ops.h), optimizers and Tensor methods
// use for CUDA `device` on the calling thread: created on first use and kept
// for the life of the process. It issues work on the per-thread default stream
// (cudaStreamPerThread), the same stream device storage is allocated, freed and
// copied on, so everything one host thread does on one device is ordered on a
// single stream without events, and memory freed by a tensor is reused only
// after the work that read it. Op front-ends take no context argument (like
// grad mode, the current device is a per-thread setting), so this is where
// callers set EngineCudaOptions: engine_cuda_context(0).options.deterministic = true.
// Throws rz::Error when the device is not usable or in a build without CUDA.
CudaContext& engine_cuda_context(int device);

// NVTX range for the lifetime of the object (nvtxRangePushA / nvtxRangePop):
// shows up in nsys timelines. No-op in a build without CUDA.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name);
  explicit NvtxRange(const std::string& name) : NvtxRange(name.c_str()) {}
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// cudaProfilerStart / cudaProfilerStop: brackets the steps that nsys
// (--capture-range=cudaProfilerApi) or ncu (--profile-from-start off) record.
void profile_start();
void profile_stop();

}  // namespace rz
