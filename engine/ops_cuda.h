// Internal helpers of the op front-ends for their CUDA branches: the stream and
// context an op issues work on, and the one error a build without CUDA gives.
// Every front-end computes on the device of its inputs; on CUDA the storage
// types are f32 and bf16 (dispatch_cuda_float), math in fp32.
#pragma once

#include <type_traits>

#include "engine/cuda_context.h"  // NvtxRange (a no-op without CUDA)
#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/tensor.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif

namespace rz {

#if defined(RZ_HAVE_CUDA)
// The stream of engine_cuda_context: device storage is allocated and freed on
// it too, so kernels, copies and frees of one host thread are ordered.
inline cudaStream_t op_stream() { return cudaStreamPerThread; }
inline CudaContext& op_context(const Tensor& t) { return engine_cuda_context(t.device().index); }
#endif

// Thrown by a CUDA branch in a build without CUDA (tensors cannot be on a
// CUDA device there, so this is unreachable in practice but explicit).
[[noreturn]] inline void no_cuda_backend(const char* op) {
  RZ_THROW(op, ": tensor on a CUDA device but this build has no CUDA backend");
}

// Calls f(T{}, on_cpu) with the element type of t on its device:
//   CPU:  T in {float, double}, on_cpu = std::true_type;
//   CUDA: T in {float, bf16},   on_cpu = std::false_type.
// Branch with `if constexpr (decltype(on_cpu)::value)` so each kernel is only
// instantiated for the types its backend has.
template <typename F> void on_device(const Tensor& t, const char* op, F&& f) {
  if (t.device().is_cpu()) {
    dispatch_float(t.dtype(), op, [&](auto tag) { f(tag, std::true_type{}); });
    return;
  }
#if defined(RZ_HAVE_CUDA)
  dispatch_cuda_float(t.dtype(), op, [&](auto tag) { f(tag, std::false_type{}); });
#else
  no_cuda_backend(op);
#endif
}

}  // namespace rz

// A CUDA launcher call in an op front-end: status checked; in a build without
// CUDA the call is compiled out (on_device never reaches it there).
#if defined(RZ_HAVE_CUDA)
#define RZ_OP_CUDA(expr) RZ_CUDA_CHECK(expr)
#else
#define RZ_OP_CUDA(expr) ::rz::no_cuda_backend(#expr)
#endif
