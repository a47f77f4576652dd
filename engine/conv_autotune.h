// Per-layer choice between cuDNN and our native convolution kernels
// (kernels/cuda/conv_native.cuh), DESIGN decision 5: "the trainer picks the
// best measured one".
//
//   ConvImpl::Cudnn   always cuDNN (the default until native variants have
//                     been validated on a GPU);
//   ConvImpl::Native  the highest native variant this device and build can
//                     run that supports the shape (v3 on Hopper when both
//                     GEMM extents exceed 64, v2 for bf16 with C, K % 8 == 0,
//                     else v1), no timing;
//   ConvImpl::Auto    for each (device, geometry, dtype, pass) the eligible
//                     native variants and cuDNN are timed once on scratch
//                     buffers (CUDA events, median of 5 after a warm-up) and
//                     the fastest is used from then on. Choices are kept in
//                     memory and in a JSON file (conv_autotune_cache_path()),
//                     keyed by device name, compute capability, geometry,
//                     dtype, pass and kConvNativeVersion, so a later run on
//                     the same GPU measures nothing.
// A native variant is eligible for Auto only once a GPU run has validated it
// against the CPU twins (conv_variant_validated; recorded in bench/RESULTS.md)
// or when EngineCudaOptions::allow_unvalidated_kernels is set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/cuda_context.h"
#include "engine/dtype.h"
#include "kernels/common/conv_epilogue.h"
#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"

namespace rz {

// Bumped whenever a native kernel changes, so cached choices are re-measured.
constexpr int kConvNativeVersion = 4;

// "cudnn", "native" or "auto"; throws rz::Error otherwise.
ConvImpl parse_conv_impl(const std::string& s);
const char* conv_impl_name(ConvImpl impl);
const char* conv_pass_name(ConvPass pass);  // "fwd", "dgrad", "wgrad"

// The native variants of this build in ladder order (1, 2, ...; empty without
// CUDA) and their names ("v1", ...).
std::vector<int> native_conv_variants();
std::string native_variant_name(int variant);

// Whether a GPU run has compared native variant `variant` (1, 2, ...) for
// `pass` with the CPU twin on every seresnet152d shape and under
// compute-sanitizer without a failure. Kept in conv_autotune.cpp.
bool conv_variant_validated(int variant, ConvPass pass);

// What one convolution call uses: cuDNN (variant 0) or native variant 1, 2...
struct ConvPlan {
  int variant = 0;
  bool native() const { return variant > 0; }
};

// What follows a forward convolution that a native kernel can take into its
// epilogue (kernels/common/conv_epilogue.h), and so what Auto compares:
//   None     the convolution alone;
//   BnStats  training-mode BN + ReLU after it: cuDNN + the fused BN (two
//            passes over y) against native-with-statistics + the BN apply
//            pass (one);
//   BnEval   eval-mode BN + ReLU after it: cuDNN + the BN apply pass against
//            native with the folded BN and ReLU in the epilogue.
enum class ConvFusion : int { None = 0, BnStats = 1, BnEval = 2 };
const char* conv_fusion_name(ConvFusion f);  // "", "+bnstats", "+bneval"

// The plan for this call under ctx.options.conv_impl (measuring and caching it
// under Auto). Must not be called during CUDA graph capture for a new shape.
// A fusion other than None needs pass == Fwd.
ConvPlan conv_plan(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                   ConvFusion fusion = ConvFusion::None);

// The forward pass with the epilogue `f` by the plan's native variant: true
// when it ran; false (nothing enqueued) when the plan is cuDNN or the variant
// refuses these operands (e.g. misaligned pointers for v2) - the caller then
// runs the unfused sequence.
bool conv_run_fused(CudaContext& ctx, const ConvPlan& plan, const Conv2dGeom& g, DType dtype,
                    const void* x, const void* w, void* y, const ConvFwdFusion& f);

// Runs one pass with the plan's implementation: Fwd out = conv(a=x, b=w),
// Dgrad out = dx from (a=dy, b=w), Wgrad out = dw from (a=x, b=dy).
void conv_run(CudaContext& ctx, const ConvPlan& plan, const Conv2dGeom& g, DType dtype,
              ConvPass pass, const void* a, const void* b, void* out);

// One row of `ranzcr bench`: the measured milliseconds of cuDNN and of each
// native variant (negative: unsupported for this shape) and the pick.
struct ConvTimingRow {
  Conv2dGeom geom{};
  ConvPass pass = ConvPass::Fwd;
  ConvFusion fusion = ConvFusion::None;  // what the timings include besides the conv
  double cudnn_ms = -1;
  std::vector<double> native_ms;  // index v - 1 for variant v
  int pick = 0;                   // what Auto would choose with every variant eligible
};
ConvTimingRow conv_time_all(CudaContext& ctx, const Conv2dGeom& g, DType dtype, ConvPass pass,
                            ConvFusion fusion = ConvFusion::None);

// $RZ_CONV_CACHE, else $XDG_CACHE_HOME/ranzcr/conv_autotune.json, else
// $HOME/.cache/ranzcr/conv_autotune.json.
std::string conv_autotune_cache_path();

}  // namespace rz
