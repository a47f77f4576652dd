// Where a tensor lives: the host, or CUDA device N. Device memory is obtained
// through engine/storage; this header only names places.
#pragma once

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

}  // namespace rz
