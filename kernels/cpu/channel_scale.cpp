// SE channel scale. Forward streams x once and writes y (2 N*HW*C elements);
// s (N*C) stays in cache. Backward reads dy and x once and writes dx: each task
// owns one image and a block of kChanBlock channels, walks its rows in hw order
// and keeps the ds sums in a small double array, so the reduction order is
// fixed (bitwise reproducible for any thread count) and no two tasks write the
// same memory.
#include "kernels/cpu/channel_scale.h"

#include <algorithm>

namespace rz {

namespace {
constexpr int64_t kParallelMin = int64_t{1} << 15;
constexpr int64_t kChanBlock = 64;
}  // namespace

template <class T>
void channel_scale_fwd_cpu(const T* x, const T* s, T* y, int64_t N, int64_t HW, int64_t C) {
  const int64_t rows = N * HW;
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* sn = s + (r / HW) * C;
    const T* xr = x + r * C;
    T* yr = y + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * sn[c];
  }
}

template <class T>
void channel_scale_bwd_cpu(const T* x, const T* s, const T* dy, T* dx, T* ds, int64_t N, int64_t HW,
                           int64_t C) {
  if (dx == nullptr && ds == nullptr) return;
  const int64_t blocks = (C + kChanBlock - 1) / kChanBlock;
#pragma omp parallel for collapse(2) schedule(static) if (N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t c0 = b * kChanBlock;
      const int64_t nc = std::min(kChanBlock, C - c0);
      const T* sn = s + n * C + c0;
      double acc[kChanBlock] = {};
      for (int64_t hw = 0; hw < HW; ++hw) {
        const int64_t off = (n * HW + hw) * C + c0;
        const T* dyr = dy + off;
        if (dx != nullptr) {
          T* dxr = dx + off;
#pragma omp simd
          for (int64_t c = 0; c < nc; ++c) dxr[c] = dyr[c] * sn[c];
        }
        if (ds != nullptr) {
          const T* xr = x + off;
#pragma omp simd
          for (int64_t c = 0; c < nc; ++c)
            acc[c] += static_cast<double>(dyr[c]) * static_cast<double>(xr[c]);
        }
      }
      if (ds != nullptr)
        for (int64_t c = 0; c < nc; ++c) ds[n * C + c0 + c] = static_cast<T>(acc[c]);
    }
  }
}

#define RZ_INSTANTIATE(T)                                                                        \
  template void channel_scale_fwd_cpu<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);     \
  template void channel_scale_bwd_cpu<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, \
                                         int64_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(double)
#undef RZ_INSTANTIATE

}  // namespace rz
