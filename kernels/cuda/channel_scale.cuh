// CUDA twin of kernels/cpu/channel_scale.h, the squeeze-excitation channel
// scale
//   y[n,hw,c] = x[n,hw,c] * s[n,c]
// x, y, dy, dx: NHWC contiguous, viewed as [N, HW, C]; s, ds: [N, C]. T is
// float or bf16 (fp32 arithmetic, bf16 rounded once on store).
//
// Reduction (ds): one block per (image n, tile of 32 channels); its 32 x 8
// threads walk the HW rows with stride 8, each summing in fp32 in hw order,
// then the 8 partial sums of a channel are combined in a fixed shared-memory
// tree. No atomics: ds is bitwise reproducible run to run and across GPUs.
//
// Each launcher enqueues on `stream` and returns cudaGetLastError() after its
// launch; empty shapes launch nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

template <typename T>
cudaError_t channel_scale_fwd_cuda(const T* x, const T* s, T* y, int64_t N, int64_t HW, int64_t C,
                                   cudaStream_t stream);

// Writes (never adds) dx[n,hw,c] = dy[n,hw,c] * s[n,c] and
// ds[n,c] = sum_hw dy[n,hw,c] * x[n,hw,c]. dx or ds may be nullptr (skipped).
template <typename T>
cudaError_t channel_scale_bwd_cuda(const T* x, const T* s, const T* dy, T* dx, T* ds, int64_t N,
                                   int64_t HW, int64_t C, cudaStream_t stream);

}  // namespace rz
