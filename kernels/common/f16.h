// IEEE 754 binary16 ("half", safetensors F16) as a file/interchange type. The
// engine computes in f32; halves are converted on load and, on request, on
// save. Both directions are exact bit manipulation (no hardware intrinsics, so
// the CPU and CUDA sides agree bit for bit):
//   half -> float: exact for every value, subnormals, +-0 and +-inf included.
//   float -> half: round to nearest, ties to even; |x| >= 65520 becomes inf,
//                  values below half the smallest subnormal (2^-25) become +-0.
// NaN stays NaN in both directions with its payload's top bits, and the quiet
// bit forced (what F16C/PTX conversions do), so rounding never turns it into inf.
#pragma once

#include <cstdint>

#include "kernels/common/bf16.h"  // f32_bits, f32_from_bits
#include "kernels/common/hostdev.h"

namespace rz {

struct f16 {
  uint16_t bits;
};

RZ_HD float f16_to_f32(f16 h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1fu) {
    if (mant == 0) return f32_from_bits(sign | 0x7f800000u);  // +-inf
    return f32_from_bits(sign | 0x7fc00000u | (mant << 13));  // NaN, kept quiet
  }
  if (exp == 0) {
    if (mant == 0) return f32_from_bits(sign);  // +-0
    // Subnormal: mant * 2^-24. The product is exact (an 11-bit integer times a
    // power of two, far inside the f32 normal range).
    return f32_from_bits(sign | f32_bits(static_cast<float>(mant) * 0x1p-24f));
  }
  // Normal: rebias the exponent (15 -> 127) and widen the mantissa (10 -> 23 bits).
  return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

RZ_HD f16 f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7fffffffu;  // |f| as bits
  if (mag > 0x7f800000u) {               // NaN: keep the payload's top bits, force the quiet bit
    return f16{static_cast<uint16_t>(sign | 0x7e00u | ((mag >> 13) & 0x3ffu))};
  }
  // 65520 = 0x477ff000 is halfway between the largest half (65504) and 2^16;
  // the tie goes to the even side, 2^16, which overflows to inf.
  if (mag >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (mag < 0x38800000u) {  // below 2^-14: a half subnormal (or zero)
    const uint32_t exp = mag >> 23;
    if (exp < 102u) return f16{sign};  // < 2^-25: rounds to zero (2^-25 itself ties to even 0)
    // |x| = m * 2^(exp-150) with the implicit bit in m; in units of 2^-24 that
    // is m >> (126 - exp), rounded to nearest even. shift is 14..24.
    const uint32_t m = (mag & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal
    return f16{static_cast<uint16_t>(sign | q)};
  }
  // Normal: rebias, keep 10 mantissa bits, round the 13 dropped bits to nearest
  // even. A carry out of the mantissa correctly bumps the exponent.
  uint32_t h = (((mag >> 23) - 112u) << 10) | ((mag >> 13) & 0x3ffu);
  const uint32_t rem = mag & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return f16{static_cast<uint16_t>(sign | h)};
}

}  // namespace rz
