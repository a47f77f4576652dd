// Storage: one allocation on one device, shared by every tensor that views it.
// Host memory is 64-byte aligned (AVX-512 loads); CUDA memory comes from the
// stream-ordered pool (cudaMallocAsync) and is freed the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

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
  uint64_t version_ = 0;
};

// Raw byte copies between any two devices (host<->device, device<->device).
// Synchronous with respect to the host in this version.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

}  // namespace rz
