#include "engine/cuda_context.h"

#include <cstdio>
#include <sstream>

#include "engine/cuda_conv.h"
#include "engine/device.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>
#include <nvtx3/nvToolsExtCudaRt.h>
#endif

namespace rz {

std::string CudaDeviceProps::str() const {
  std::ostringstream os;
  os << name << " (sm_" << cc_major << cc_minor << ", " << sm_count << " SMs, "
     << (total_memory_bytes >> 20) << " MiB, L2 " << (l2_cache_bytes >> 10) << " KiB)";
  return os.str();
}

#if defined(RZ_HAVE_CUDA)

namespace {
// Destructor-side checks: log, never throw.
void log_cuda(cudaError_t s, const char* what) {
  if (s != cudaSuccess)
    std::fprintf(stderr, "rz: ~CudaContext: %s failed: %s\n", what, cudaGetErrorString(s));
}
}  // namespace

CudaContext::CudaContext(int device, const std::string& stream_name, StreamKind kind)
    : device_(device), owns_stream_(kind == StreamKind::Owned) {
  int count = 0;
  RZ_CUDA_CHECK(cudaGetDeviceCount(&count));
  RZ_CHECK(device >= 0 && device < count, "CUDA device ", device, " requested but ", count,
           " device(s) are usable");
  try {
    RZ_CUDA_CHECK(cudaSetDevice(device));
    keep_pool_memory(device);
    cudaDeviceProp p{};
    RZ_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    props_.name = p.name;
    props_.sm_count = p.multiProcessorCount;
    props_.cc_major = p.major;
    props_.cc_minor = p.minor;
    props_.total_memory_bytes = p.totalGlobalMem;
    props_.l2_cache_bytes = static_cast<size_t>(p.l2CacheSize);
    props_.shared_memory_per_sm_bytes = p.sharedMemPerMultiprocessor;

    cudaStream_t s = cudaStreamPerThread;
    if (owns_stream_) {
      RZ_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      nvtxNameCudaStreamA(s, stream_name.c_str());
    } else {
      nvtxNameCudaStreamA(s, "rz.engine");  // the per-thread default stream, named for nsys
    }
    stream_ = s;

    cublasHandle_t blas = nullptr;
    RZ_CUBLAS_CHECK(cublasCreate(&blas));
    cublas_ = blas;
    RZ_CUBLAS_CHECK(cublasSetStream(blas, s));
    // Full fp32 unless a call asks for TF32 through its compute type.
    RZ_CUBLAS_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
    // A workspace of our own (the size cuBLAS recommends for Hopper), so no
    // GEMM allocates memory inside a CUDA graph capture.
    constexpr size_t kCublasWorkspace = size_t{32} << 20;
    RZ_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspace));
    RZ_CUBLAS_CHECK(cublasSetWorkspace(blas, cublas_workspace_, kCublasWorkspace));

    cublasLtHandle_t lt = nullptr;
    RZ_CUBLAS_CHECK(cublasLtCreate(&lt));
    cublaslt_ = lt;

    cudnnHandle_t dnn = nullptr;
    RZ_CUDNN_CHECK(cudnnCreate(&dnn));
    cudnn_ = dnn;
    RZ_CUDNN_CHECK(cudnnSetStream(dnn, s));

    conv_cache_ = std::make_unique<ConvAlgoCache>();
  } catch (...) {
    release();
    throw;
  }
}

void CudaContext::release() noexcept {
  if (stream_ == nullptr && cublas_ == nullptr && cublaslt_ == nullptr && cudnn_ == nullptr &&
      cublas_workspace_ == nullptr)
    return;
  log_cuda(cudaSetDevice(device_), "cudaSetDevice");
  if (stream_ != nullptr) {
    if (workspace_ != nullptr) log_cuda(cudaFreeAsync(workspace_, stream_), "cudaFreeAsync(workspace)");
    log_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  if (cudnn_ != nullptr) {
    const cudnnStatus_t st = cudnnDestroy(cudnn_);
    if (st != CUDNN_STATUS_SUCCESS)
      std::fprintf(stderr, "rz: ~CudaContext: cudnnDestroy failed: %s\n", cudnnGetErrorString(st));
    cudnn_ = nullptr;
  }
  if (cublaslt_ != nullptr) {
    const cublasStatus_t st = cublasLtDestroy(cublaslt_);
    if (st != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "rz: ~CudaContext: cublasLtDestroy failed: %s\n", cublasGetStatusString(st));
    cublaslt_ = nullptr;
  }
  if (cublas_ != nullptr) {
    const cublasStatus_t st = cublasDestroy(cublas_);
    if (st != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "rz: ~CudaContext: cublasDestroy failed: %s\n", cublasGetStatusString(st));
    cublas_ = nullptr;
  }
  if (stream_ != nullptr) {
    if (owns_stream_) log_cuda(cudaStreamDestroy(stream_), "cudaStreamDestroy");
    stream_ = nullptr;
  }
  if (cublas_workspace_ != nullptr) {
    log_cuda(cudaFree(cublas_workspace_), "cudaFree(cuBLAS workspace)");
    cublas_workspace_ = nullptr;
  }
}

CudaContext::~CudaContext() { release(); }

void CudaContext::make_current() const { RZ_CUDA_CHECK(cudaSetDevice(device_)); }

void* CudaContext::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  make_current();
  // Round up to 1 MiB so a sequence of slightly growing requests does not
  // reallocate every time.
  const size_t rounded = (bytes + (size_t{1} << 20) - 1) & ~((size_t{1} << 20) - 1);
  if (workspace_ != nullptr) {
    RZ_CUDA_CHECK(cudaFreeAsync(workspace_, stream_));
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }
  void* p = nullptr;
  RZ_CUDA_CHECK(cudaMallocAsync(&p, rounded, stream_));
  workspace_ = p;
  workspace_bytes_ = rounded;
  return workspace_;
}

void CudaContext::synchronize() const {
  make_current();
  RZ_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaContext& engine_cuda_context(int device) {
  // One slot per device and thread. The contexts are intentionally never
  // destroyed: tensors may outlive any scope here (statics, the thread's last
  // tensors), and tearing handles down during process exit races the CUDA
  // runtime's own shutdown. The driver reclaims everything at exit.
  constexpr int kMaxDevices = 64;
  thread_local CudaContext* contexts[kMaxDevices] = {};
  RZ_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " out of range");
  if (contexts[device] == nullptr)
    contexts[device] = new CudaContext(device, "", CudaContext::StreamKind::PerThreadDefault);
  else
    contexts[device]->make_current();
  return *contexts[device];
}

NvtxRange::NvtxRange(const char* name) { nvtxRangePushA(name); }
NvtxRange::~NvtxRange() { nvtxRangePop(); }

void profile_start() { RZ_CUDA_CHECK(cudaProfilerStart()); }
void profile_stop() { RZ_CUDA_CHECK(cudaProfilerStop()); }

#else  // !RZ_HAVE_CUDA

CudaContext::CudaContext(int device, const std::string& stream_name, StreamKind kind)
    : device_(device) {
  (void)stream_name;
  (void)kind;
  RZ_THROW("CudaContext(", device, "): built without CUDA (configure with a CUDA compiler and RZ_CUDA=ON)");
}
CudaContext::~CudaContext() { release(); }
void CudaContext::release() noexcept {}
void CudaContext::make_current() const { RZ_THROW("CudaContext: built without CUDA"); }
void* CudaContext::workspace(size_t) { RZ_THROW("CudaContext: built without CUDA"); }
void CudaContext::synchronize() const { RZ_THROW("CudaContext: built without CUDA"); }
CudaContext& engine_cuda_context(int device) {
  RZ_THROW("CUDA device ", device, " requested: built without CUDA");
}

NvtxRange::NvtxRange(const char*) {}
NvtxRange::~NvtxRange() = default;

void profile_start() { RZ_THROW("profile_start: built without CUDA"); }
void profile_stop() { RZ_THROW("profile_stop: built without CUDA"); }

#endif

}  // namespace rz
