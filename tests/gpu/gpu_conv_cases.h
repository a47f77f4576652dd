// The convolutions the native-conv GPU tests run (tests/gpu/test_gpu_conv_*.cpp)
// and their CPU references: every distinct convolution of seresnet152d at
// batch 2 and 64x64 input, named after its first layer (models/conv_shapes.h),
// and the CPU twin of each pass (kernels/cpu/conv2d.h).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"
#include "models/conv_shapes.h"
#include "models/seresnet.h"

namespace rz::gpu_test {

struct ConvCase {
  std::string what;
  Conv2dGeom g;
};

// With RZ_GPU_TEST_SUBSET set (scripts/gpu_check.sh sets it for the
// compute-sanitizer runs, which slow kernels down 10-100x) only every Nth
// shape for RZ_GPU_TEST_SUBSET=N >= 2 (every third for 1 or any other value),
// which still mixes 1x1, 3x3 and strided convolutions of every stage.
inline std::vector<ConvCase> seresnet152d_conv_cases() {
  std::vector<ConvCase> cases;
  const ResNetConfig cfg = resnet_config("seresnet152d");
  const std::vector<ConvLayer> layers = resnet_conv_layers(cfg, 2, 64);
  const char* subset = std::getenv("RZ_GPU_TEST_SUBSET");
  size_t stride = 1;
  if (subset != nullptr && *subset != '\0' && std::string(subset) != "0") {
    const long n = std::strtol(subset, nullptr, 10);
    stride = n >= 2 ? static_cast<size_t>(n) : 3;
  }
  size_t index = 0;
  for (const Conv2dGeom& g : resnet_conv_shapes(cfg, 2, 64)) {
    if (index++ % stride != 0) continue;
    std::string name;
    for (const ConvLayer& l : layers)
      if (same_conv_geom(l.geom, g)) {
        name = l.name;
        break;
      }
    cases.push_back({"seresnet152d " + name, g});
  }
  return cases;
}

// Appends {N, H, W, C, K, R, S, sh, sw, ph, pw} rows as cases named "odd".
template <size_t Rows>
void add_odd_cases(std::vector<ConvCase>& cases, const int64_t (&odd)[Rows][11]) {
  for (const auto& s : odd)
    cases.push_back({"odd", make_conv2d_geom(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
                                             s[9], s[10])});
}

inline const char* pass_name(ConvPass p) {
  return p == ConvPass::Fwd ? "fwd" : (p == ConvPass::Dgrad ? "dgrad" : "wgrad");
}

inline int64_t out_elems(ConvPass p, const Conv2dGeom& g) {
  if (p == ConvPass::Fwd) return g.N * g.OH * g.OW * g.K;
  if (p == ConvPass::Dgrad) return g.N * g.H * g.W * g.C;
  return g.K * g.R * g.S * g.C;
}

// The pass's output from the CPU twin (dy unused by Fwd, x by Dgrad, w by Wgrad).
template <typename R>
std::vector<R> cpu_pass(ConvPass p, const Conv2dGeom& g, const std::vector<R>& x,
                        const std::vector<R>& w, const std::vector<R>& dy) {
  std::vector<R> out(static_cast<size_t>(out_elems(p, g)));
  if (p == ConvPass::Fwd) conv2d_fwd_cpu(x.data(), w.data(), out.data(), g);
  if (p == ConvPass::Dgrad) conv2d_bwd_data_cpu(dy.data(), w.data(), out.data(), g);
  if (p == ConvPass::Wgrad) conv2d_bwd_weight_cpu(x.data(), dy.data(), out.data(), g);
  return out;
}

}  // namespace rz::gpu_test
