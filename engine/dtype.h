// Element types a Tensor can hold. Compute on CPU is f32 (f64 for gradient
// checks); bf16 is a storage type converted with round-to-nearest-even; u8
// holds image caches and i64 indices/labels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kernels/common/bf16.h"

namespace rz {

enum class DType : uint8_t { F32, F64, BF16, U8, I64 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::U8: return 1;
    case DType::I64: return 8;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::U8: return "u8";
    case DType::I64: return "i64";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

DType parse_dtype(std::string_view name);  // "f32", "float32", "bf16", ... ; throws rz::Error

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };

}  // namespace rz
