// The sm_80+ asynchronous global -> shared copies the native convolutions
// (conv_native_v2.cu, conv_native_v3.cu) stream their operands with: thin
// wrappers over the PTX, device code only. Include from .cu files and use
// only in code compiled for sm_80 or later.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
namespace rz::cp_async {

// The 32-bit shared-state-space address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy (L2 only); with valid == false no byte is
// read and the destination is zero-filled (src-size 0). src must still be a
// valid address.
__device__ __forceinline__ void copy_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}

// Closes this thread's group of copies issued since the last commit.
__device__ __forceinline__ void commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are in flight.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace rz::cp_async
#endif
