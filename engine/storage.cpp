#include "engine/storage.h"

#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <deque>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/error.h"

namespace rz {

namespace {
constexpr size_t kHostAlignment = 64;

std::string format_gb(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return buf;
}

thread_local const AllocationPurpose* t_purpose = nullptr;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kHostCacheAllowed = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kHostCacheAllowed = false;
#else
constexpr bool kHostCacheAllowed = true;
#endif
#else
constexpr bool kHostCacheAllowed = true;
#endif

constexpr size_t kHostCacheMinBytes = size_t{64} << 10;
constexpr size_t kHostCachePage = size_t{4} << 10;

size_t host_cache_limit_from_env() {
  if (!kHostCacheAllowed) return 0;
  const char* env = std::getenv("RZ_HOST_CACHE_MB");
  if (env == nullptr || *env == '\0') return size_t{4096} << 20;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(env, &end, 10);
  RZ_CHECK(end != env && *end == '\0', "RZ_HOST_CACHE_MB = '", env, "' (expected a whole number of MiB)");
  return static_cast<size_t>(mb) << 20;
}

// The host block cache (storage.h): free blocks by rounded size.
class HostCache {
 public:
  static HostCache& get() {
    static HostCache* cache = new HostCache();  // never destroyed: tensors may die after main
    return *cache;
  }
  size_t limit() const { return limit_; }
  // A cached block of exactly `rounded` bytes, or nullptr.
  void* take(size_t rounded) {
    std::lock_guard<std::mutex> lock(m_);
    auto it = free_.find(rounded);
    if (it == free_.end() || it->second.empty()) {
      ++misses_;
      return nullptr;
    }
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= rounded;
    ++hits_;
    return p;
  }
  // Keeps the block when it fits under the limit; false: the caller frees it.
  bool give(void* p, size_t rounded) {
    std::lock_guard<std::mutex> lock(m_);
    if (cached_ + rounded > limit_) return false;
    free_[rounded].push_back(p);
    cached_ += rounded;
    return true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(m_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  HostCacheStats stats() {
    std::lock_guard<std::mutex> lock(m_);
    return {hits_, misses_, cached_, limit_};
  }

 private:
  HostCache() : limit_(host_cache_limit_from_env()) {}
  std::mutex m_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  const size_t limit_;
  uint64_t hits_ = 0, misses_ = 0;
};

// Host blocks: 64-byte aligned; sizes the cache handles are rounded to 4 KiB.
size_t host_rounded(size_t bytes) {
  const size_t r = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  return r >= kHostCacheMinBytes ? (r + kHostCachePage - 1) / kHostCachePage * kHostCachePage : r;
}
bool host_cacheable(size_t rounded) { return rounded >= kHostCacheMinBytes && HostCache::get().limit() > 0; }

#if defined(RZ_HAVE_CUDA)
struct DeviceGuard {
  int previous = 0;
  explicit DeviceGuard(int index) {
    RZ_CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != index) RZ_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
};

// The asynchronous uploads of this thread whose sources are still held: one
// event per copy, recorded right after it on the engine stream. Events on one
// stream complete in order, so finished entries are taken from the front.
struct PendingUploads {
  struct Entry {
    cudaEvent_t done;
    std::shared_ptr<const Storage> src;
  };
  std::deque<Entry> q;

  // Drops the entries whose copies have completed.
  void reap() {
    while (!q.empty()) {
      const cudaError_t st = cudaEventQuery(q.front().done);
      if (st == cudaErrorNotReady) return;
      RZ_CUDA_CHECK(st);
      RZ_CUDA_CHECK(cudaEventDestroy(q.front().done));
      q.pop_front();
    }
  }
  // Thread exit: wait for every copy before letting go of its source.
  ~PendingUploads() {
    for (Entry& e : q) {
      cudaEventSynchronize(e.done);
      cudaEventDestroy(e.done);
    }
  }
};

PendingUploads& pending() {
  thread_local PendingUploads p;
  return p;
}

struct CaptureState {
  bool active = false;
  std::vector<DeviceBlock> released;  // allocated before the capture, freed during it
};

CaptureState& capture_state() {
  thread_local CaptureState c;
  return c;
}

void free_device_block(const DeviceBlock& b) noexcept {
  const cudaError_t st = cudaFreeAsync(b.ptr, cudaStreamPerThread);
  if (st != cudaSuccess) {
    std::fprintf(stderr, "ranzcr: cudaFreeAsync failed on cuda:%d: %s\n", b.device, cudaGetErrorString(st));
    cudaGetLastError();  // reported here; not left for the next launch check to find
  }
}
#endif
}  // namespace

void capture_began() {
#if defined(RZ_HAVE_CUDA)
  capture_state().active = true;
#endif
}

std::vector<DeviceBlock> capture_ended() {
#if defined(RZ_HAVE_CUDA)
  CaptureState& c = capture_state();
  c.active = false;
  std::vector<DeviceBlock> out;
  out.swap(c.released);
  return out;
#else
  return {};
#endif
}

void free_device_blocks(std::vector<DeviceBlock>& blocks) noexcept {
#if defined(RZ_HAVE_CUDA)
  for (const DeviceBlock& b : blocks) free_device_block(b);
#endif
  blocks.clear();
}

size_t pending_uploads() {
#if defined(RZ_HAVE_CUDA)
  pending().reap();
  return pending().q.size();
#else
  return 0;
#endif
}

void upload_bytes(void* dst, Device dst_dev, const std::shared_ptr<const Storage>& src,
                  const void* src_ptr, size_t bytes) {
  RZ_CHECK(src && src->device().is_cpu() && dst_dev.is_cuda(),
           "upload_bytes: needs a host source and a CUDA destination");
#if defined(RZ_HAVE_CUDA)
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  RZ_CUDA_CHECK(cudaStreamIsCapturing(cudaStreamPerThread, &cap));
  if (bytes == 0 || !src->pinned() || cap != cudaStreamCaptureStatusNone) {
    copy_bytes(dst, dst_dev, src_ptr, Device::cpu(), bytes);
    return;
  }
  PendingUploads& p = pending();
  p.reap();
  RZ_CUDA_CHECK(cudaMemcpyAsync(dst, src_ptr, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread));
  cudaEvent_t done = nullptr;
  RZ_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  const cudaError_t st = cudaEventRecord(done, cudaStreamPerThread);
  if (st != cudaSuccess) {
    cudaEventDestroy(done);
    RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));  // the copy must not outlive src
    RZ_CUDA_CHECK(st);
  }
  p.q.push_back({done, src});
#else
  copy_bytes(dst, dst_dev, src_ptr, Device::cpu(), bytes);
#endif
}

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
    const size_t rounded = host_rounded(alloc);
    if (host_cacheable(rounded) && (data_ = HostCache::get().take(rounded)) != nullptr) return;
    data_ = std::aligned_alloc(kHostAlignment, rounded);
    if (data_ == nullptr && HostCache::get().stats().cached_bytes > 0) {
      HostCache::get().release();  // the cached blocks may be what is missing
      data_ = std::aligned_alloc(kHostAlignment, rounded);
    }
    RZ_CHECK(data_ != nullptr, "out of host memory allocating ", bytes, " bytes (",
             format_gb(bytes), ") for ", AllocationPurpose::current_what(), "; ",
             AllocationPurpose::current_advice());
    return;
  }
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(device.index < cuda_device_count(), "no such CUDA device: ", device.str());
  DeviceGuard guard(device.index);
  keep_pool_memory(device.index);
  const cudaError_t st = cudaMallocAsync(&data_, alloc, cudaStreamPerThread);
  if (st == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    // The pool keeps what was freed into it (keep_pool_memory): its reserved
    // but unused bytes count as used in free_b.
    uint64_t reserved = 0, used = 0;
    cudaMemPool_t pool = nullptr;
    const bool pool_known =
        cudaDeviceGetDefaultMemPool(&pool, device.index) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) ==
            cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess;
    cudaGetLastError();
    RZ_THROW("out of GPU memory on ", device.str(), " allocating ", bytes, " bytes (",
             format_gb(bytes), ") for ", AllocationPurpose::current_what(), " (", free_b, " of ",
             total_b, " bytes free",
             pool_known ? "; the memory pool reserves " + std::to_string(reserved) + " bytes, " +
                              std::to_string(used) + " in use"
                        : std::string(),
             "); ", AllocationPurpose::current_advice());
  }
  RZ_CUDA_CHECK(st);
  graph_memory_ = capture_state().active;
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
    const size_t rounded = host_rounded(bytes_ == 0 ? kHostAlignment : bytes_);
    if (!host_cacheable(rounded) || !HostCache::get().give(data_, rounded)) std::free(data_);
    return;
  }
#if defined(RZ_HAVE_CUDA)
  const DeviceBlock block{data_, device_.index};
  if (CaptureState& c = capture_state(); c.active && !graph_memory_) {
    c.released.push_back(block);  // CudaGraph frees it with the graph
    return;
  }
  free_device_block(block);  // destructors report instead of throwing
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

AllocationPurpose::AllocationPurpose(std::string what, std::string advice)
    : what_(std::move(what)), advice_(std::move(advice)), outer_(t_purpose) {
  t_purpose = this;
}

AllocationPurpose::~AllocationPurpose() { t_purpose = outer_; }

std::string AllocationPurpose::current_what() {
  return t_purpose == nullptr ? std::string("a tensor") : t_purpose->what_;
}

std::string AllocationPurpose::current_advice() {
  return t_purpose == nullptr ? std::string("lower the batch size (train.batch, --batch) or the "
                                            "image size (model.img_size, --img-size)")
                              : t_purpose->advice_;
}

HostCacheStats host_cache_stats() { return HostCache::get().stats(); }
void host_cache_release() { HostCache::get().release(); }

}  // namespace rz
