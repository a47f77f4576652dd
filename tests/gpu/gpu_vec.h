// Host-side vectors of the GPU kernel tests: random inputs, bf16 rounding and
// its inverse (what a bf16 tensor holds, as the CPU twin sees it).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/generator.h"
#include "kernels/common/bf16.h"

namespace rz::gpu_test {

// n values uniform in [lo, hi).
inline std::vector<float> random_vec(int64_t n, double lo, double hi, Generator& gen) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = static_cast<float>(gen.uniform(lo, hi));
  return v;
}
inline std::vector<float> random_vec(int64_t n, Generator& gen, double lo = -1, double hi = 1) {
  return random_vec(n, lo, hi, gen);
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

// The fp32 values a bf16 tensor made from v holds.
inline std::vector<float> rounded(const std::vector<float>& v) { return to_f32(to_bf16(v)); }

}  // namespace rz::gpu_test
