// CUDA twins of kernels/cpu/activation.h (same meaning, same argument order,
// plus the stream). Contiguous buffers of n elements; T is float or bf16
// (bf16 is loaded to fp32, computed in fp32 with the RZ_HD functions of
// kernels/common/activation_math.h, rounded once on store). Forward writes y;
// backward OVERWRITES dx and takes the forward OUTPUT y. y and x (or dx and dy)
// may alias for in-place use. Each launcher enqueues on `stream` and returns
// cudaGetLastError() after the launch; n <= 0 launches nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

// y = max(x, 0)
template <typename T>
cudaError_t relu_fwd_cuda(const T* x, T* y, int64_t n, cudaStream_t stream);

// dx = (y > 0) ? dy : 0
template <typename T>
cudaError_t relu_bwd_cuda(const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream);

// y = 1 / (1 + exp(-x)), stable for large |x|.
template <typename T>
cudaError_t sigmoid_fwd_cuda(const T* x, T* y, int64_t n, cudaStream_t stream);

// dx = dy * y * (1 - y)
template <typename T>
cudaError_t sigmoid_bwd_cuda(const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream);

}  // namespace rz
