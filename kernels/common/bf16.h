// bfloat16 storage type: the upper 16 bits of an IEEE fp32. Conversion from
// fp32 rounds to nearest, ties to even (what cuDNN, PyTorch and the hardware
// do); NaN stays NaN (quiet bit forced so rounding cannot turn it into Inf).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/common/hostdev.h"

namespace rz {

struct bf16 {
  uint16_t bits;
};

RZ_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

RZ_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

RZ_HD bf16 f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};  // NaN: keep it quiet
  }
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return bf16{static_cast<uint16_t>(u >> 16)};
}

RZ_HD float bf16_to_f32(bf16 h) { return f32_from_bits(static_cast<uint32_t>(h.bits) << 16); }

}  // namespace rz
