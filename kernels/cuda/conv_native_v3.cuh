// Native convolution v3: Hopper (sm_90a) bf16 implicit GEMM with wgmma and
// TMA (kernels/cuda/conv_native_v3.cu; layouts in kernels/common/conv_wgmma.h).
// Same meaning and operand convention as detail::conv_native_v2
// (kernels/cuda/conv_native.cuh): NHWC x, y, dx, dy; KRSC w, dw; bf16
// storage, fp32 accumulation; a, b = the pass's GEMM operands (Fwd: x, w;
// Dgrad: dy, w; Wgrad: dy, x), out = y, dx or dw, every element overwritten.
//
// Needs: C % 8 == 0 and K % 8 == 0 (v3_geometry_ok), 16-byte aligned a and b,
// 4-byte aligned out, a compute capability 9.x device, and a build whose
// CMAKE_CUDA_ARCHITECTURES holds 90 (the file is then compiled for sm_90a).
// Anything else returns cudaErrorInvalidValue, so callers fall back to V2.
// This launcher runs every such GEMM, also those the ladder does not give v3
// (igemm::v3_declines: M or N <= 64; the ConvVariant::V3 entry points refuse them).
//
// Fwd applies `ep` (kernels/common/conv_epilogue.h) with M-tiles of
// igemm::kV3BM rows (ep.stats: [ceil(M / kV3BM)][2][K] floats). Dgrad and
// Wgrad take no epilogue: ep.any() returns cudaErrorInvalidValue. Wgrad
// splits its reduction like v2 (workspace from cudaMallocAsync on `stream`).
#pragma once

#include <cuda_runtime.h>

#include "kernels/common/bf16.h"
#include "kernels/common/conv_epilogue.h"
#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"

namespace rz::detail {

cudaError_t conv_native_v3(ConvPass pass, const Conv2dGeom& g, const bf16* a, const bf16* b,
                           bf16* out, const ConvFwdEpilogue& ep, cudaStream_t stream);

// Whether the current device and this build can run v3 at all: a compute
// capability 9.x device and sm_90a code for the kernels.
bool conv_native_v3_available();

}  // namespace rz::detail
