#include "engine/device.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>

#include "engine/cuda_check.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/common/host_cache.h"

namespace rz {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

DeviceMemory cuda_memory_info(int device) {
#if defined(RZ_HAVE_CUDA)
  RZ_CHECK(device >= 0 && device < cuda_device_count(), "no such CUDA device: cuda:", device);
  int previous = 0;
  RZ_CUDA_CHECK(cudaGetDevice(&previous));
  if (previous != device) RZ_CUDA_CHECK(cudaSetDevice(device));
  DeviceMemory m;
  const cudaError_t st = cudaMemGetInfo(&m.free_bytes, &m.total_bytes);
  if (previous != device) cudaSetDevice(previous);
  RZ_CUDA_CHECK(st);
  return m;
#else
  RZ_THROW("cannot query cuda:", device, ": this build has no CUDA backend");
#endif
}

namespace {
// The first number of the line of /proc/meminfo starting with `key`, in bytes.
size_t meminfo_bytes(const char* key) {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t value = 0;
  const size_t klen = std::strlen(key);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, key, klen) == 0) {
      unsigned long long kb = 0;
      if (std::sscanf(line + klen, " %llu", &kb) == 1) value = static_cast<size_t>(kb) * 1024;
      break;
    }
  }
  std::fclose(f);
  return value;
}

// The cgroup v2 memory limit minus current use, or SIZE_MAX when unlimited or unknown.
size_t cgroup_headroom() {
  auto read_u64 = [](const char* path, size_t* out) {
    std::FILE* f = std::fopen(path, "r");
    if (f == nullptr) return false;
    char buf[64] = {};
    const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
    std::fclose(f);
    if (!ok || std::strncmp(buf, "max", 3) == 0) return false;
    unsigned long long v = 0;
    if (std::sscanf(buf, "%llu", &v) != 1) return false;
    *out = static_cast<size_t>(v);
    return true;
  };
  size_t limit = 0, current = 0;
  if (!read_u64("/sys/fs/cgroup/memory.max", &limit)) return SIZE_MAX;
  if (!read_u64("/sys/fs/cgroup/memory.current", &current)) return SIZE_MAX;
  return limit > current ? limit - current : 0;
}
}  // namespace

size_t host_available_memory() {
  const size_t avail = meminfo_bytes("MemAvailable:");
  if (avail == 0) return 0;
  return std::min(avail, cgroup_headroom());
}

int cuda_device_count() {
#if defined(RZ_HAVE_CUDA)
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: not an error for a CPU run
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

void keep_pool_memory(int device) {
#if defined(RZ_HAVE_CUDA)
  // Storage calls this before every allocation: after the first success on a
  // device, a thread-local flag answers without the memo's lock.
  thread_local std::array<bool, 64> done{};
  const bool cacheable = device >= 0 && device < static_cast<int>(done.size());
  if (cacheable && done[static_cast<size_t>(device)]) return;
  static PerDeviceMemo<bool, 64> configured;
  configured.get(device, [device] {
    int supported = 0;
    RZ_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device));
    if (supported == 0) return std::pair{false, true};
    cudaMemPool_t pool = nullptr;
    RZ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;  // cuuint64_t: never trim at a synchronize
    RZ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    return std::pair{true, true};
  });
  if (cacheable) done[static_cast<size_t>(device)] = configured.kept(device);
#else
  RZ_THROW("keep_pool_memory(", device, "): built without CUDA");
#endif
}

Device parse_device(std::string_view s) {
  if (s == "cpu") return Device::cpu();
  if (s == "auto") return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  if (s.starts_with("cuda")) {
    int index = 0;
    if (s.size() > 4) {
      RZ_CHECK(s[4] == ':', "bad device '", s, "' (expected cpu, cuda, cuda:N or auto)");
      const auto digits = s.substr(5);
      const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
      RZ_CHECK(ec == std::errc() && ptr == digits.data() + digits.size() && index >= 0,
               "bad device index in '", s, "'");
    }
    const int n = cuda_device_count();
    RZ_CHECK(index < n, "device '", s, "' requested but ", n, " CUDA device(s) are usable",
             n == 0 ? " (no GPU, or a build without CUDA)" : "");
    return Device::cuda(index);
  }
  RZ_THROW("bad device '", s, "' (expected cpu, cuda, cuda:N or auto)");
}

DType parse_dtype(std::string_view name) {
  if (name == "f32" || name == "float32" || name == "fp32") return DType::F32;
  if (name == "f64" || name == "float64" || name == "fp64") return DType::F64;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "u8" || name == "uint8") return DType::U8;
  if (name == "i64" || name == "int64") return DType::I64;
  RZ_THROW("unknown dtype '", name, "' (expected f32, f64, bf16, u8 or i64)");
}

}  // namespace rz
