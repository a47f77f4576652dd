// Storage: one allocation on one device, shared by every tensor that views it.
// Host memory is 64-byte aligned (AVX-512 loads); CUDA memory comes from the
// stream-ordered pool (cudaMallocAsync) and is freed the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"

namespace rz {

class Storage {
 public:
  // pin_host: for host storage, page-locked memory (cudaMallocHost) when a
  // CUDA device is usable, so host-to-device copies can run asynchronously;
  // ordinary aligned memory otherwise (pinned() tells which one you got).
  Storage(size_t bytes, Device device, bool pin_host = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool pinned() const { return pinned_; }

  // Bumped by every in-place write, so autograd can tell when a tensor it
  // saved for backward was modified afterwards.
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  bool pinned_ = false;
  bool graph_memory_ = false;  // allocated while this thread was capturing (capture_began)
  uint64_t version_ = 0;
};

// Host memory blocks of 64 KiB and more are not returned to the C library
// when their tensor dies: they are kept, by size rounded to 4 KiB, for the
// next allocation of that size. A training step allocates the same sizes in
// every step, so after the first one its activations come from the cache
// instead of from fresh pages that the kernel must fault in and zero (about
// 10% of a CPU step otherwise). At most host_cache_limit() bytes are kept
// (RZ_HOST_CACHE_MB, default 4096; 0 turns the cache off); an allocation that
// fails first empties the cache and tries again. Off in AddressSanitizer
// builds, so a use after free of a tensor is still caught.
struct HostCacheStats {
  uint64_t hits = 0, misses = 0;  // allocations of cacheable size served / not served by the cache
  size_t cached_bytes = 0;        // held now, free for reuse
  size_t limit_bytes = 0;
};
HostCacheStats host_cache_stats();
// Frees every cached block (tests; before handing memory to another program).
void host_cache_release();

// What this thread is allocating memory for, so that "out of memory" says
// what was being allocated and which setting to lower. Scopes nest; the
// innermost names the allocation. Without one, the error gives general advice.
//   AllocationPurpose p("the training step's activations (batch 32, 512 px)",
//                       "lower train.batch or model.img_size");
class AllocationPurpose {
 public:
  AllocationPurpose(std::string what, std::string advice);
  ~AllocationPurpose();
  AllocationPurpose(const AllocationPurpose&) = delete;
  AllocationPurpose& operator=(const AllocationPurpose&) = delete;
  // The innermost scope's purpose and advice, or "a tensor" and general advice.
  static std::string current_what();
  static std::string current_advice();

 private:
  std::string what_, advice_;
  const AllocationPurpose* outer_;
};

// Device memory allocated outside a CUDA graph capture and released while the
// releasing thread is capturing cannot be freed there (CUDA refuses a captured
// free of memory the graph did not allocate), and the captured work may read
// it on every replay. CudaGraph brackets its capture with capture_began() and
// capture_ended() on the capturing thread; in between, ~Storage hands such
// blocks to a per-thread list, which capture_ended() returns for the graph to
// free, stream-ordered, when it is destroyed or recaptured. A thread-local
// flag, not a runtime query, so allocations and frees stay as cheap as before.
struct DeviceBlock {
  void* ptr = nullptr;
  int device = 0;
};
void capture_began();
std::vector<DeviceBlock> capture_ended();
// Frees each block with cudaFreeAsync on the engine stream; reports failures
// on stderr and never throws (destructors call it).
void free_device_blocks(std::vector<DeviceBlock>& blocks) noexcept;

// Raw byte copies between any two devices (host<->device, device<->device).
// Device-to-device copies are queued on the engine stream; copies that touch
// host memory complete before returning.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

// Host-to-device copy of `bytes` at `src_ptr` (inside the host storage `src`)
// to `dst` on CUDA device dst_dev. From pinned memory it is asynchronous:
// queued on the engine stream like a kernel, and `src` stays referenced until
// the copy has completed, so whoever recycles storages by their use count
// (the batch pool of data/loader.cpp) cannot overwrite it early and nobody can
// free it. Pageable sources, and any call during a CUDA graph capture, go
// through copy_bytes. The batch upload of a training step thus overlaps the
// previous step's kernels instead of waiting for them.
void upload_bytes(void* dst, Device dst_dev, const std::shared_ptr<const Storage>& src,
                  const void* src_ptr, size_t bytes);

// Uploads by upload_bytes that this thread still keeps alive (tests).
size_t pending_uploads();

}  // namespace rz
