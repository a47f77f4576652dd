// CPU reference twin of the squeeze-excitation channel scale:
//   y[n,hw,c] = x[n,hw,c] * s[n,c]
// x, y, dy, dx: NHWC contiguous, viewed as [N, HW, C]; s, ds: [N, C].
#pragma once

#include <cstdint>

namespace rz {

template <class T>
void channel_scale_fwd_cpu(const T* x, const T* s, T* y, int64_t N, int64_t HW, int64_t C);

// Writes (never adds) dx[n,hw,c] = dy[n,hw,c] * s[n,c] and
// ds[n,c] = sum_hw dy[n,hw,c] * x[n,hw,c] (accumulated in double, in hw order).
// dx or ds may be nullptr: that output is skipped.
template <class T>
void channel_scale_bwd_cpu(const T* x, const T* s, const T* dy, T* dx, T* ds, int64_t N, int64_t HW,
                           int64_t C);

}  // namespace rz
