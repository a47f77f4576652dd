// Runtime dtype -> C++ type dispatch for op front-ends:
//   dispatch_float(t, "relu", [&](auto tag) { using T = decltype(tag); ... });
#pragma once

#include <cstdint>

#include "engine/dtype.h"
#include "engine/error.h"

namespace rz {

// f32 and f64: the compute types of the CPU backend.
template <typename F> decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    default: RZ_THROW(op, ": unsupported dtype ", dtype_name(t), " (expected f32 or f64)");
  }
}

// f32 and bf16: the storage types of the CUDA backend (math in fp32).
template <typename F> decltype(auto) dispatch_cuda_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(bf16{});
    default: RZ_THROW(op, ": unsupported dtype ", dtype_name(t), " on CUDA (expected f32 or bf16)");
  }
}

template <typename F> decltype(auto) dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F64: return f(double{});
    case DType::BF16: return f(bf16{});
    case DType::U8: return f(uint8_t{});
    case DType::I64: return f(int64_t{});
  }
  RZ_THROW("invalid dtype value ", static_cast<int>(t));
}

}  // namespace rz
