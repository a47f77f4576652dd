// 4-D axis permutation on the CPU: dst[i_perm[0], ..] = src[i0, i1, i2, i3],
// i.e. dst dimension d is src dimension perm[d]. Used for layout changes
// (NCHW <-> NHWC activations, OIHW <-> KRSC conv weights).
#pragma once

#include <array>
#include <cstdint>

namespace rz {

// src has shape `dims`; dst gets shape {dims[perm[0]], ..., dims[perm[3]]}.
// T is any trivially copyable element type (instantiated for 1, 2, 4, 8 bytes).
template <typename T>
void permute4_cpu(const T* src, T* dst, const std::array<int64_t, 4>& dims,
                  const std::array<int, 4>& perm);

}  // namespace rz
