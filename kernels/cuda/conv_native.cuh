// Native 2-D convolutions (our own kernels, measured against cuDNN in
// bench/conv_bench.cpp), with the meaning of the CPU twins in
// kernels/cpu/conv2d.h: NHWC x, y, dx, dy; KRSC w, dw; no bias;
// cross-correlation; the stride and zero padding of Conv2dGeom; dilation 1;
// groups 1. Each direction is an implicit GEMM (operands gathered on the fly,
// see kernels/common/conv_igemm.h for the exact mapping).
//
// The ladder (every version kept, selected by ConvVariant):
//   V1  simple shared-memory tiled GEMM, fp32 FMA, 64x64x16 tiles, one
//       thread per 4x4 outputs; any geometry, float and bf16 storage
//       (fp32 accumulation). The readable reference.
//   V2  bf16 tensor cores: mma.sync m16n8k16 (bf16 in, fp32 accumulate),
//       ldmatrix from swizzled shared memory, 3-stage cp.async (16-byte,
//       zero-fill for padding) pipeline, 64x32 warp tiles, k-tile 32; block
//       tile 128x128 (8 warps), or 128x64 when the GEMM N <= 64, or 64x128
//       when M <= 64 < N (4 warps; igemm::v2_pick_tile). All three pass the
//       GPU tests on an H200; racecheck has not finished on them
//       (bench/RESULTS.md, GPU validation status).
//       bf16 only; needs C % 8 == 0 and K % 8 == 0 (16-byte vectors along the
//       channels), 16-byte aligned operands, 4-byte aligned output, and an
//       sm_80+ device. Fwd, Dgrad and Wgrad.
//   V3  Hopper (sm_90a): wgmma.mma_async m64n128k16 from 128-byte-swizzled
//       shared memory through matrix descriptors, 2 warpgroups, 128x128x64
//       tiles, 4-stage ring; gathered operands by cp.async, the Fwd weight
//       tile by TMA (kernels/cuda/conv_native_v3.cuh). bf16 only, V2's
//       geometry and alignment rules, a 9.x device and a build holding
//       sm_90a code (else cudaErrorInvalidValue). Declines GEMMs with M or N
//       <= 64 (igemm::v3_declines), where its tile would compute mostly
//       zero padding: they go to V2's narrow tiles.
// Both: every tensor has fewer than 2^31 - 2^20 elements (32-bit indexing).
// Wgrad splits the long reduction (N*OH*OW) over blocks when M*N is small;
// the fp32 partials go to a workspace from cudaMallocAsync on `stream` and are
// added in split order by a second kernel (deterministic), then freed on the
// stream. Fwd and Dgrad need no workspace. Every output is overwritten.
//
// All pointers are device pointers; work is enqueued on `stream`; each call
// returns the first failing CUDA status (cudaGetLastError after each launch)
// or cudaErrorInvalidValue for a combination the variant does not support
// (check conv2d_native_supported first and fall back to V1 or cuDNN).
// Unvalidated on a GPU so far: the index logic is proven by CPU emulation
// (tests/kernels/test_conv_igemm.cpp), the kernels by tests/gpu.
#pragma once

#include <cuda_runtime.h>

#include "kernels/common/bf16.h"
#include "kernels/common/conv_epilogue.h"
#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"

namespace rz {

enum class ConvVariant : int { V1 = 1, V2 = 2, V3 = 3 };

// Every variant, in ladder order (tests and benchmarks loop over it).
inline constexpr ConvVariant kConvVariants[] = {ConvVariant::V1, ConvVariant::V2, ConvVariant::V3};

// "v1" / "v2" (stable names for logs and benchmark tables); "unknown" else.
const char* conv_variant_name(ConvVariant v);

// y[N, OH, OW, K] = conv(x[N, H, W, C], w[K, R, S, C]).
template <typename T>
cudaError_t conv2d_fwd_native(ConvVariant v, const Conv2dGeom& g, const T* x, const T* w, T* y,
                              cudaStream_t stream);
// The forward pass fused with what follows it in a ResNet
// (kernels/common/conv_epilogue.h):
//   y = round_T([relu](acc * scale[k] + shift[k]))  (affine when scale is set)
// and, when sums != nullptr, the sums and sums of squares of the stored y per
// channel and segment of rows (ConvFwdFusion). Each block writes fp32
// partials of its M-tile to a stream-ordered workspace;
// detail::conv_stats_finalize adds them in tile order in double:
// deterministic, no atomics.
// scale and shift are set together or not at all (cudaErrorInvalidValue).
// ConvFwdFusion is in kernels/common/conv_epilogue.h.
template <typename T>
cudaError_t conv2d_fwd_native_fused(ConvVariant v, const Conv2dGeom& g, const T* x, const T* w,
                                    T* y, const ConvFwdFusion& f, cudaStream_t stream);
// dx[N, H, W, C] = d(sum dy*y)/dx.
template <typename T>
cudaError_t conv2d_bwd_data_native(ConvVariant v, const Conv2dGeom& g, const T* dy, const T* w,
                                   T* dx, cudaStream_t stream);
// dw[K, R, S, C] = d(sum dy*y)/dw.
template <typename T>
cudaError_t conv2d_bwd_filter_native(ConvVariant v, const Conv2dGeom& g, const T* x, const T* dy,
                                     T* dw, cudaStream_t stream);

// Whether variant v runs this direction, geometry and storage type (T = float
// or bf16). Geometry and type only: V2 additionally needs an sm_80+ device and
// aligned pointers, which the launchers check. For V3 also false for the GEMMs
// it declines (igemm::v3_supported); the entry points above refuse those too.
template <typename T>
bool conv2d_native_supported(ConvVariant v, ConvPass pass, const Conv2dGeom& g);

// Whether the current device and this build can run variant v at all (v1:
// any device; v2: sm_80+; v3: a 9.x device and sm_90a code in the build).
// Launchers refuse (cudaErrorInvalidValue) what this rules out.
bool conv_native_available(ConvVariant v);

namespace detail {
// The per-variant launchers behind the dispatch above. a, b: the pass's GEMM
// operands (Fwd: x, w; Dgrad: dy, w; Wgrad: dy, x); out: y, dx or dw.
// ep (Fwd only; Dgrad and Wgrad reject a non-empty one) as documented in
// kernels/common/conv_epilogue.h, with M-tiles of conv_fwd_tile_rows(v, g) rows.
template <typename T>
cudaError_t conv_native_v1(ConvPass pass, const Conv2dGeom& g, const T* a, const T* b, T* out,
                           const ConvFwdEpilogue& ep, cudaStream_t stream);
cudaError_t conv_native_v2(ConvPass pass, const Conv2dGeom& g, const bf16* a, const bf16* b,
                           bf16* out, const ConvFwdEpilogue& ep, cudaStream_t stream);
// The block height BM of variant v's forward kernel on geometry g (its
// statistics tiles): fixed for V1 and V3; for V2 the BM of the block tile
// igemm::v2_pick_tile chooses for g's Fwd GEMM (64 or 128). 0 for an unknown
// variant or a geometry make_igemm_geom rejects.
int conv_fwd_tile_rows(ConvVariant v, const Conv2dGeom& g);
// Per segment s of tiles / segments consecutive tiles (tiles % segments ==
// 0): sums[(j * segments + s) * K + k] = sum over the segment's tiles t of
// partials[(t * 2 + j) * K + k], j = 0, 1, added in tile order in double (two
// fixed-shape passes; deterministic).
cudaError_t conv_stats_finalize(const float* partials, int tiles, int64_t K, int64_t segments,
                                double* sums, cudaStream_t stream);
// out[i] = sum over z < splits (in order) of ws[z*mn + i], rounded once to T.
template <typename T>
cudaError_t splitk_reduce(const float* ws, int splits, int64_t mn, T* out, cudaStream_t stream);
// The number of SMs of the current device (for split-K planning).
cudaError_t current_sm_count(int* sms);
}  // namespace detail

}  // namespace rz
