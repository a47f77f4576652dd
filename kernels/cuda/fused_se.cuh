// CUDA twin of kernels/cpu/fused_se.h: the fused SE block tail
//   out = relu(BN(t) * sigmoid(fc2(relu(fc1(mean_hw BN(t))))) + shortcut)
// with the same meaning and argument order as the CPU twin plus the stream.
// t, shortcut, out, dout, dt, dshortcut are T (float or bf16) NHWC [N, HW, C];
// BN and SE parameters, running stats, saved vectors and parameter gradients
// are fp32 (SeWeights<float>, SeSaved<float>, SeGrads<float>).
//
// Passes over the big [N, HW, C] tensors (elements per element; bf16: 2 bytes
// each):
//   forward   pass 1: read t -> per-(image, channel) shifted sums of t and t^2
//                     (BN batch statistics and the SE squeeze at once)   1R
//             small:  BN statistics per channel; SE excitation (squeeze,
//                     fc1 + ReLU, fc2 + sigmoid), O(N*C*rd)
//             pass 2: read t, shortcut; write out                    2R + 1W
//             total 3R + 1W (unfused BN, pool, scale, add, ReLU: 8R + 4W)
//   backward  pass 1: read dout, out, t; write dshortcut = g and the
//                     per-(image, channel) sums of g, g*(t - mean), t - mean
//                                                                     3R + 1W
//             small:  SE MLP backward (ds, dzs, dh, dp), SE parameter
//                     gradients, BN coefficients per channel, O(N*C*rd)
//             pass 2: read dshortcut (g), t; write dt                 2R + 1W
//             total 5R + 2W (unfused ReLU, scale, pool, add, BN backward:
//             10R + 5W)
// The small kernels read W1 and W2 once per image (mostly from L2) and
// O(N*C) vectors; they are launches of their own, a fixed cost per call that
// matters only for the small late-stage tensors.
//
// Determinism: no atomics; the per-(image, channel) sums use the segmented
// column walk of fused_bn.cuh (shape-only chunking, fixed trees, fp64
// combine); the SE dot products use fixed shuffle / shared-memory trees; the
// sums over images run in image order. Statistics and coefficients are fp64,
// per-element math fp32.
//
// Requirements: N, HW, C, rd >= 1 and N <= 65535; eval forward needs the
// running statistics; backward needs every saved vector, dt and dshortcut
// (dshortcut may alias dout). Otherwise cudaErrorInvalidValue. Workspace from
// the stream-ordered pool. Returns the first error of its allocations and
// launches. Unvalidated on a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/bf16.h"
#include "kernels/cpu/fused_se.h"

namespace rz {

// Forward. saved.* may each be nullptr (then kept in scratch); training
// updates running_mean / running_var in place when not nullptr.
// image_sums (device, may be nullptr): [2][N][C] raw per-image sums of t as
// in kernels/cpu/fused_se.h; the statistics pass over t is skipped.
template <typename T>
cudaError_t fused_se_fwd_cuda(const T* t, const T* shortcut, const SeWeights<float>& w, T* out,
                              const SeSaved<float>& saved, float* running_mean, float* running_var,
                              const SeDims& d, const FusedSeOptions& opt, const double* image_sums,
                              cudaStream_t stream);

// Backward; writes (never adds) dt, dshortcut and the non-null grads.*.
template <typename T>
cudaError_t fused_se_bwd_cuda(const T* t, const T* out, const T* dout, const SeWeights<float>& w,
                              const SeSaved<const float>& saved, T* dt, T* dshortcut,
                              const SeGrads<float>& grads, const SeDims& d,
                              const FusedSeOptions& opt, cudaStream_t stream);

}  // namespace rz
