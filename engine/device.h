// Where a tensor lives: the host, or CUDA device N. Device memory is obtained
// through engine/storage; this header only names places.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rz {

struct Device {
  enum class Kind : uint8_t { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static constexpr Device cpu() { return {Kind::CPU, 0}; }
  static constexpr Device cuda(int i = 0) { return {Kind::CUDA, i}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// "cpu", "cuda", "cuda:N" or "auto" (cuda:0 when a GPU is usable, else cpu).
// Throws rz::Error for anything else, or for a CUDA device that is not there.
Device parse_device(std::string_view s);

// Number of usable CUDA devices: 0 in a CPU-only build or on a machine
// without a GPU (never throws).
int cuda_device_count();

// Free and total bytes of CUDA device `device` (cudaMemGetInfo; memory the
// pool reserves counts as used). Throws rz::Error without CUDA.
struct DeviceMemory {
  size_t free_bytes = 0, total_bytes = 0;
};
DeviceMemory cuda_memory_info(int device);

// Bytes of host memory available to a new allocation without swapping
// (MemAvailable of /proc/meminfo, lowered to the cgroup's limit when the
// process runs under one); 0 when unknown.
size_t host_available_memory();

// Makes the default memory pool of CUDA device `device` (the pool
// cudaMallocAsync draws from: every Storage, workspace and kernel scratch
// buffer) keep the memory freed into it: release threshold UINT64_MAX instead
// of the driver's 0, which hands every freed byte back at each synchronize so
// that the next training step maps gigabytes again. Memory reserved by the
// pool is then not available to plain cudaMalloc (cuDNN/NCCL internals).
// Runs once per device and process (Storage and CudaContext call it before
// their first allocation); thread-safe. A device without memory pools is left
// alone. Throws rz::Error when a CUDA call fails (and tries again on the next
// call), or in a build without CUDA.
void keep_pool_memory(int device);

}  // namespace rz
