// CUDA twins of kernels/cpu/pool.h: 2-D max / average pooling and global
// average pooling on NHWC tensors, same meaning and argument order as the CPU
// twins plus the stream. x, dx: [N, H, W, C]; y, dy, argmax: [N, OH, OW, C];
// all contiguous. Geometry comes from make_pool2d_geom (kernels/cpu/pool.h);
// the caller validates it (k >= 1, s >= 1, 0 <= p <= k/2, OH, OW >= 1, and
// H*W < 2^31 so argmax = h*W + w fits int32). T is float or bf16: values are
// widened to fp32, sums accumulate in fp32, results are rounded once on store.
//
// Every kernel gives each thread one output element and sums in a fixed order
// (no atomics), so results are bitwise reproducible:
//   - max backward is a gather: each dx element sums, in ascending (oh, ow)
//     order, the dy of the outputs whose argmax points at it -- the same order
//     in which the CPU twin scatters, so fp32 results match it bit for bit;
//   - avg backward gathers dy / divisor over the windows that contain it;
//   - global average pool forward: one block per (image, 32-channel tile),
//     8 row lanes each summing HW rows with stride 8 in fp32, combined by a
//     fixed shared-memory tree, then divided by HW.
// Backward kernels OVERWRITE dx. Each launcher enqueues on `stream` and
// returns cudaGetLastError() after its launch; empty shapes launch nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"
#include "kernels/cpu/pool.h"

namespace rz {

// Padding acts as -inf; first maximum in row-major window order on ties; a NaN
// in the window propagates (the last NaN wins). argmax = h*W + w.
template <typename T>
cudaError_t max_pool2d_fwd_cuda(const T* x, T* y, int32_t* argmax, const Pool2dGeom& g,
                                cudaStream_t stream);

// dx = 0, then dx[n, argmax, c] += dy[n, oh, ow, c] for every output.
template <typename T>
cudaError_t max_pool2d_bwd_cuda(const T* dy, const int32_t* argmax, T* dx, const Pool2dGeom& g,
                                cudaStream_t stream);

// PyTorch avg_pool2d windows (ceil-mode edges, count_include_pad), see pool.h.
template <typename T>
cudaError_t avg_pool2d_fwd_cuda(const T* x, T* y, const Pool2dGeom& g, bool count_include_pad,
                                cudaStream_t stream);

template <typename T>
cudaError_t avg_pool2d_bwd_cuda(const T* dy, T* dx, const Pool2dGeom& g, bool count_include_pad,
                                cudaStream_t stream);

// y[n,c] = mean over hw of x[n,hw,c]; x viewed as [N, HW, C].
template <typename T>
cudaError_t global_avg_pool_fwd_cuda(const T* x, T* y, int64_t N, int64_t HW, int64_t C,
                                     cudaStream_t stream);

// dx[n,hw,c] = dy[n,c] / HW.
template <typename T>
cudaError_t global_avg_pool_bwd_cuda(const T* dy, T* dx, int64_t N, int64_t HW, int64_t C,
                                     cudaStream_t stream);

}  // namespace rz
