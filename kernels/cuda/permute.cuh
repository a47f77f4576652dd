// The CUDA twin of permute4_cpu (kernels/cpu/permute.h): dst dimension d is
// src dimension perm[d]; src has shape `dims`. Moves bits only, so T is any
// 2- or 4-byte type (instantiated for bf16 and float; callers reinterpret
// other element types of the same size).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

template <typename T>
cudaError_t permute4_cuda(const T* src, T* dst, const std::array<int64_t, 4>& dims,
                          const std::array<int, 4>& perm, cudaStream_t stream);

}  // namespace rz
