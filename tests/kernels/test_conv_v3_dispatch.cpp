// Which GEMMs the native-conv ladder gives v3 (kernels/common/conv_wgmma.h:
// v3_declines, v3_supported) and what takes the ones it declines: on
// seresnet152d's shapes the stem and layer1 passes (M or N <= 64) go to v2's
// 128x64 / 64x128 tiles, every other conv pass at training size stays on v3,
// and the GPU tests' shape list still holds v3 work in every pass. Also the
// key of v3's weight tensor-map cache: built from the geometry, and every
// field takes part in equality.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/common/conv_igemm.h"
#include "kernels/common/conv_wgmma.h"
#include "kernels/common/host_cache.h"
#include "kernels/cpu/conv2d.h"
#include "models/conv_shapes.h"
#include "models/seresnet.h"
#include "tests/gpu/gpu_conv_cases.h"

#if defined(RZ_HAVE_CUDA)
#include "kernels/common/bf16.h"
#include "kernels/cuda/conv_native.cuh"
#endif

using namespace rz;
using namespace rz::igemm;

namespace {

constexpr ConvPass kPasses[] = {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad};

GemmDims dims_of(ConvPass p, const Conv2dGeom& g) {
  IgemmGeom ig;
  REQUIRE(make_igemm_geom(g, &ig));
  return gemm_dims(p, ig);
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// The rule every seresnet152d pass must follow: v3 takes it unless M or N is
// at most 64; a declined GEMM runs on v2 with the narrow tile on the narrow side.
void check_routing(ConvPass p, const Conv2dGeom& g) {
  if (!v3_geometry_ok(p, g)) return;
  const GemmDims d = dims_of(p, g);
  CAPTURE(d.M);
  CAPTURE(d.N);
  const bool narrow = d.M <= 64 || d.N <= 64;
  CHECK(v3_declines(d) == narrow);
  CHECK(v3_supported(p, g) == !narrow);
  if (!narrow) return;
  REQUIRE(v2_geometry_ok(p, g));
  const V2TileShape t = v2_pick_tile(d);
  if (d.N <= 64)
    CHECK((t.bm == 128 && t.bn == 64));
  else
    CHECK((t.bm == 64 && t.bn == 128));
#if defined(RZ_HAVE_CUDA)
  // The ladder sees the same: v3 unsupported, v2 supported (and so chosen
  // by --conv-impl native, and by conv_run / conv_run_fused falling down).
  CHECK(!conv2d_native_supported<bf16>(ConvVariant::V3, p, g));
  CHECK(conv2d_native_supported<bf16>(ConvVariant::V2, p, g));
  if (p == ConvPass::Fwd) CHECK(detail::conv_fwd_tile_rows(ConvVariant::V2, g) == t.bm);
#endif
}

}  // namespace

TEST_CASE("conv v3 dispatch: v3 declines GEMMs with M or N at most 64") {
  CHECK(v3_declines(GemmDims{8192, 64, 576}));
  CHECK(v3_declines(GemmDims{8192, 32, 288}));
  CHECK(v3_declines(GemmDims{64, 576, 8192}));
  CHECK(v3_declines(GemmDims{8, 2048, 4608}));
  CHECK(v3_declines(GemmDims{64, 64, 64}));
  CHECK(v3_declines(GemmDims{0, 256, 64}));
  CHECK_FALSE(v3_declines(GemmDims{8192, 65, 576}));
  CHECK_FALSE(v3_declines(GemmDims{65, 576, 8192}));
  CHECK_FALSE(v3_declines(GemmDims{8192, 128, 1152}));
  CHECK_FALSE(v3_declines(GemmDims{256, 2304, 32768}));

  // v3_supported = what the kernel runs, less what it declines.
  const Conv2dGeom wide = make_conv2d_geom(4, 16, 16, 128, 128, 3, 3, 1, 1, 1, 1);
  const Conv2dGeom narrow = make_conv2d_geom(4, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1);
  const Conv2dGeom c3 = make_conv2d_geom(4, 16, 16, 3, 128, 3, 3, 1, 1, 1, 1);
  for (ConvPass p : kPasses) {
    CAPTURE(static_cast<int>(p));
    CHECK(v3_supported(p, wide));
    CHECK(v3_geometry_ok(p, narrow));
    CHECK_FALSE(v3_supported(p, narrow));
    CHECK_FALSE(v3_supported(p, c3));  // C % 8 != 0: not runnable at all
  }
}

TEST_CASE("conv v3 dispatch: seresnet152d at training size, stem and layer1 go to v2") {
  const ResNetConfig cfg = resnet_config("seresnet152d");
  int v3_passes = 0, v2_passes = 0;
  for (const ConvLayer& l : resnet_conv_layers(cfg, 32, 512)) {
    if (l.se) continue;  // SE excitations run as linear layers
    CAPTURE(l.name);
    const bool early = starts_with(l.name, "conv1.") || starts_with(l.name, "layer1.");
    for (ConvPass p : kPasses) {
      CAPTURE(static_cast<int>(p));
      check_routing(p, l.geom);
      if (!v3_geometry_ok(p, l.geom)) {
        CHECK(l.name == "conv1.0");  // C = 3: the only conv v3 cannot run
        continue;
      }
      const bool on_v3 = v3_supported(p, l.geom);
      if (!early) CHECK(on_v3);
      (on_v3 ? v3_passes : v2_passes) += 1;
    }
  }
  // The stem's 3x3 convs after the first and layer1's 64-channel sides (Fwd
  // K = 64, Dgrad C = 64, Wgrad K or R*S*C <= 64): 30 of the network's passes.
  CHECK(v2_passes == 30);
  CHECK(v3_passes > 400);

  const Conv2dGeom stem2 = make_conv2d_geom(32, 256, 256, 32, 32, 3, 3, 1, 1, 1, 1);
  CHECK_FALSE(v3_supported(ConvPass::Fwd, stem2));    // N = K = 32
  CHECK_FALSE(v3_supported(ConvPass::Dgrad, stem2));  // N = C = 32
  CHECK_FALSE(v3_supported(ConvPass::Wgrad, stem2));  // M = K = 32
  const Conv2dGeom l1c3 = make_conv2d_geom(32, 128, 128, 64, 256, 1, 1, 1, 1, 0, 0);
  CHECK(v3_supported(ConvPass::Fwd, l1c3));          // N = 256
  CHECK_FALSE(v3_supported(ConvPass::Dgrad, l1c3));  // N = C = 64
  CHECK_FALSE(v3_supported(ConvPass::Wgrad, l1c3));  // N = R*S*C = 64
}

TEST_CASE("conv v3 dispatch: the GPU tests' seresnet152d cases still give v3 work in every pass") {
  int supported[3] = {0, 0, 0};
  for (const gpu_test::ConvCase& c : gpu_test::seresnet152d_conv_cases()) {
    CAPTURE(c.what);
    for (ConvPass p : kPasses) {
      check_routing(p, c.g);
      if (v3_supported(p, c.g)) ++supported[static_cast<int>(p)];
    }
  }
  CHECK(supported[0] > 0);
  CHECK(supported[1] > 0);
  CHECK(supported[2] > 0);
}

TEST_CASE("conv v3 dispatch: the weight tensor-map key holds every encoding input") {
  const Conv2dGeom g = make_conv2d_geom(2, 16, 16, 64, 256, 3, 3, 1, 1, 1, 1);
  IgemmGeom ig;
  REQUIRE(make_igemm_geom(g, &ig));
  alignas(16) static unsigned char buf[64];
  const V3WeightMapKey k = v3_weight_map_key(ig, buf, 1);
  CHECK(k.device == 1);
  CHECK(k.address == reinterpret_cast<uintptr_t>(buf));
  CHECK(k.dims[0] == 3u * 3u * 64u);
  CHECK(k.dims[1] == 256u);
  CHECK(k.row_stride_bytes == 3u * 3u * 64u * 2u);
  CHECK(k.row_stride_bytes % 16 == 0);
  CHECK((k.box[0] == static_cast<uint32_t>(kV3BK) && k.box[1] == static_cast<uint32_t>(kV3BN)));
  CHECK((k.elem_strides[0] == 1 && k.elem_strides[1] == 1));

  const V3WeightMapKeyHash hash;
  CHECK(v3_weight_map_key(ig, buf, 1) == k);
  CHECK(hash(v3_weight_map_key(ig, buf, 1)) == hash(k));
  // Changing any one field gives a different key.
  std::vector<V3WeightMapKey> variants(9, k);
  variants[0].device = 0;
  variants[1].address += 16;
  variants[2].dims[0] += 8;
  variants[3].dims[1] += 8;
  variants[4].row_stride_bytes += 16;
  variants[5].box[0] = 32;
  variants[6].box[1] = 64;
  variants[7].elem_strides[0] = 2;
  variants[8].elem_strides[1] = 2;
  for (size_t i = 0; i < variants.size(); ++i) {
    CAPTURE(i);
    CHECK_FALSE(variants[i] == k);
    CHECK(hash(variants[i]) != hash(k));
  }
  // Same address and shape as another conv's weights, other shape: other key.
  const Conv2dGeom g2 = make_conv2d_geom(2, 16, 16, 64, 128, 3, 3, 1, 1, 1, 1);
  IgemmGeom ig2;
  REQUIRE(make_igemm_geom(g2, &ig2));
  CHECK_FALSE(v3_weight_map_key(ig2, buf, 1) == k);

  // In the launcher's cache: a repeated (buffer, shape, device) hits, others miss.
  LruCache<V3WeightMapKey, int, V3WeightMapKeyHash> cache(4);
  cache.put(k, 7);
  CHECK(cache.find(v3_weight_map_key(ig, buf, 1)) == 7);
  CHECK_FALSE(cache.find(v3_weight_map_key(ig, buf, 0)).has_value());
  CHECK_FALSE(cache.find(v3_weight_map_key(ig2, buf, 1)).has_value());
  CHECK_FALSE(cache.find(v3_weight_map_key(ig, buf + 16, 1)).has_value());
}
