// Memory traffic: one read and one write per element; the loop runs over the
// destination in order (sequential writes) and gathers from the source with
// precomputed strides.
#include "kernels/cpu/permute.h"

#include <cstddef>

namespace rz {

template <typename T>
void permute4_cpu(const T* src, T* dst, const std::array<int64_t, 4>& dims,
                  const std::array<int, 4>& perm) {
  const std::array<int64_t, 4> src_stride = {dims[1] * dims[2] * dims[3], dims[2] * dims[3],
                                             dims[3], 1};
  std::array<int64_t, 4> d{}, s{};
  for (int i = 0; i < 4; ++i) {
    d[static_cast<size_t>(i)] = dims[static_cast<size_t>(perm[static_cast<size_t>(i)])];
    s[static_cast<size_t>(i)] = src_stride[static_cast<size_t>(perm[static_cast<size_t>(i)])];
  }
#pragma omp parallel for collapse(2) schedule(static) if (d[0] * d[1] * d[2] * d[3] > (1 << 16))
  for (int64_t a = 0; a < d[0]; ++a)
    for (int64_t b = 0; b < d[1]; ++b) {
      T* out = dst + (a * d[1] + b) * d[2] * d[3];
      const T* in = src + a * s[0] + b * s[1];
      for (int64_t c = 0; c < d[2]; ++c)
        for (int64_t e = 0; e < d[3]; ++e) *out++ = in[c * s[2] + e * s[3]];
    }
}

template void permute4_cpu<uint8_t>(const uint8_t*, uint8_t*, const std::array<int64_t, 4>&,
                                    const std::array<int, 4>&);
template void permute4_cpu<uint16_t>(const uint16_t*, uint16_t*, const std::array<int64_t, 4>&,
                                     const std::array<int, 4>&);
template void permute4_cpu<uint32_t>(const uint32_t*, uint32_t*, const std::array<int64_t, 4>&,
                                     const std::array<int, 4>&);
template void permute4_cpu<uint64_t>(const uint64_t*, uint64_t*, const std::array<int64_t, 4>&,
                                     const std::array<int, 4>&);

}  // namespace rz
