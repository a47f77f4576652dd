#include "engine/storage.h"

#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <new>

#include "engine/cuda_check.h"
#include "engine/error.h"

namespace rz {

namespace {
constexpr size_t kHostAlignment = 64;

#if defined(RZ_HAVE_CUDA)
struct DeviceGuard {
  int previous = 0;
  explicit DeviceGuard(int index) {
    RZ_CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != index) RZ_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
};
#endif
}  // namespace

Storage::Storage(size_t bytes, Device device, bool pin_host) : bytes_(bytes), device_(device) {
  const size_t alloc = bytes == 0 ? kHostAlignment : bytes;
#if defined(RZ_HAVE_CUDA)
  if (device.is_cpu() && pin_host && cuda_device_count() > 0) {
    const cudaError_t st = cudaMallocHost(&data_, alloc);
    if (st == cudaSuccess) {
      pinned_ = true;
      return;
    }
    cudaGetLastError();  // fall back to pageable memory: pinning is an optimization
    data_ = nullptr;
  }
#else
  (void)pin_host;
#endif
  if (device.is_cpu()) {
    const size_t rounded = (alloc + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    data_ = std::aligned_alloc(kHostAlignment, rounded);
    RZ_CHECK(data_ != nullptr, "out of host memory allocating ", bytes, " bytes");
    return;
  }
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(device.index < cuda_device_count(), "no such CUDA device: ", device.str());
  DeviceGuard guard(device.index);
  const cudaError_t st = cudaMallocAsync(&data_, alloc, cudaStreamPerThread);
  if (st == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    RZ_THROW("out of GPU memory on ", device.str(), ": requested ", bytes, " bytes, ", free_b,
             " of ", total_b, " bytes free");
  }
  RZ_CUDA_CHECK(st);
#else
  RZ_THROW("cannot allocate on ", device.str(), ": this build has no CUDA backend");
#endif
}

Storage::~Storage() {
#if defined(RZ_HAVE_CUDA)
  if (pinned_) {
    const cudaError_t st = cudaFreeHost(data_);
    if (st != cudaSuccess) std::fprintf(stderr, "ranzcr: cudaFreeHost failed: %s\n", cudaGetErrorString(st));
    return;
  }
#endif
  if (device_.is_cpu()) {
    std::free(data_);
    return;
  }
#if defined(RZ_HAVE_CUDA)
  // Destructors report instead of throwing.
  const cudaError_t st = cudaFreeAsync(data_, cudaStreamPerThread);
  if (st != cudaSuccess)
    std::fprintf(stderr, "ranzcr: cudaFreeAsync failed on %s: %s\n", device_.str().c_str(),
                 cudaGetErrorString(st));
#endif
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if defined(RZ_HAVE_CUDA)
  const cudaMemcpyKind kind = dst_dev.is_cpu()   ? cudaMemcpyDeviceToHost
                              : src_dev.is_cpu() ? cudaMemcpyHostToDevice
                                                 : cudaMemcpyDeviceToDevice;
  RZ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, cudaStreamPerThread));
  // Device-to-device copies stay queued on the stream like any kernel. A copy
  // that touches host memory completes before returning: the host buffer may be
  // read or freed right after, and pinned memory would otherwise be raced.
  if (kind != cudaMemcpyDeviceToDevice) RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
#else
  RZ_THROW("cannot copy between ", src_dev.str(), " and ", dst_dev.str(),
           ": this build has no CUDA backend");
#endif
}

}  // namespace rz
