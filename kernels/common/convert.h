// Element conversion between storage types, shared by the CPU and CUDA casts.
// Floating -> u8 saturates and rounds to nearest; floating -> i64 truncates
// toward zero (like a C cast); anything -> bf16 rounds to nearest even.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/common/bf16.h"
#include "kernels/common/hostdev.h"

namespace rz {

template <typename T> RZ_HD double to_f64(T v) { return static_cast<double>(v); }
template <> RZ_HD double to_f64<bf16>(bf16 v) { return static_cast<double>(bf16_to_f32(v)); }

template <typename D> RZ_HD D from_f64(double v) { return static_cast<D>(v); }
template <> RZ_HD float from_f64<float>(double v) { return static_cast<float>(v); }
template <> RZ_HD bf16 from_f64<bf16>(double v) { return f32_to_bf16(static_cast<float>(v)); }
template <> RZ_HD uint8_t from_f64<uint8_t>(double v) {
  if (!(v > 0.0)) return 0;  // also NaN
  if (v >= 255.0) return 255;
  return static_cast<uint8_t>(v + 0.5);
}

template <typename S, typename D> RZ_HD D convert_element(S v) {
  if constexpr (std::is_same_v<S, D>) {
    return v;
  } else {
    return from_f64<D>(to_f64<S>(v));  // exact for every pair except i64 beyond 2^53
  }
}

}  // namespace rz
