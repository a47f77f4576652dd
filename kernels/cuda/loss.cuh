// CUDA twins of kernels/cpu/loss.h: fused loss + gradient in one pass.
//
// Each launcher reads the inputs once, writes the per-element gradient (when
// asked) in the same pass, and reduces the mean loss deterministically:
//   pass 1: a grid whose size depends on the element count only (never on the
//           device) accumulates per-thread sums in double, reduces each block
//           in a fixed shared-memory tree and writes one partial per block;
//   pass 2: one block sums the partials in a fixed tree and writes the mean as
//           fp32 to *loss_out.
// No atomics, so the loss is bitwise reproducible run to run and across GPUs.
// The partials workspace (at most 1024 doubles) is taken from the stream-ordered
// pool with cudaMallocAsync on `stream` and released with cudaFreeAsync on the
// same stream, so callers pass no workspace.
//
// Precision: T is float or bf16; per-element math is fp32 (the RZ_HD functions
// of kernels/common/loss_math.h, the same the CPU twins call), the sums and the
// gradient scaling are double (as in the CPU twins), gradients are rounded once
// to T.
//
// Each launcher returns cudaErrorInvalidValue for an empty input (the mean is
// undefined) or a null required pointer, otherwise the first error of the
// allocation / launches (cudaGetLastError).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"

namespace rz {

// BCE-with-logits, mean over rows*L elements (PyTorch BCEWithLogitsLoss,
// reduction='mean'). logits, targets and dlogits are [rows, L] contiguous,
// pos_weight is [L] or nullptr (all ones). Writes *loss_out (device fp32) and,
// when dlogits != nullptr, writes (never adds)
//   dlogits = dloss_scale * d(mean loss) / dlogits,
// dloss_scale being the upstream gradient of the mean (usually 1).
template <typename T>
cudaError_t bce_with_logits_cuda(const T* logits, const float* targets, const float* pos_weight,
                                 T* dlogits, float dloss_scale, float* loss_out, int64_t rows,
                                 int64_t L, cudaStream_t stream);

// Mean over n of (a - b)^2 into *loss_out (device fp32); in the same pass writes
// da = dloss_scale * 2 (a - b) / n and db = -da where those are non-null.
template <typename T>
cudaError_t mse_cuda(const T* a, const T* b, T* da, T* db, float dloss_scale, float* loss_out,
                     int64_t n, cudaStream_t stream);

}  // namespace rz
