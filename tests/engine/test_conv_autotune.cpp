// The host side of the per-layer convolution choice (engine/conv_autotune.h):
// names, the cache location, the validation table. Timing needs a GPU
// (`ranzcr bench`, tests/gpu).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "engine/conv_autotune.h"

using namespace rz;

TEST_CASE("conv autotune: implementation names round-trip; bad names are errors") {
  for (ConvImpl i : {ConvImpl::Cudnn, ConvImpl::Native, ConvImpl::Auto})
    CHECK(parse_conv_impl(conv_impl_name(i)) == i);
  CHECK_THROWS_WITH_AS(parse_conv_impl("fastest"), doctest::Contains("cudnn, native or auto"), Error);
  CHECK(std::string(conv_pass_name(ConvPass::Fwd)) == "fwd");
  CHECK(std::string(conv_pass_name(ConvPass::Dgrad)) == "dgrad");
  CHECK(std::string(conv_pass_name(ConvPass::Wgrad)) == "wgrad");
}

TEST_CASE("conv autotune: no native variant is eligible for auto before a GPU run validates it") {
  for (int v = 1; v <= 3; ++v)
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) CHECK_FALSE(conv_variant_validated(v, p));
  const auto variants = native_conv_variants();
  for (size_t i = 0; i < variants.size(); ++i) {
    CHECK(variants[i] == static_cast<int>(i) + 1);  // ladder order, numbered from 1
    CHECK(native_variant_name(variants[i]) == "v" + std::to_string(i + 1));
  }
}

TEST_CASE("conv autotune: the cache file follows RZ_CONV_CACHE, then XDG_CACHE_HOME, then HOME") {
  const char* old_rz = std::getenv("RZ_CONV_CACHE");
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string keep_rz = old_rz ? old_rz : "", keep_xdg = old_xdg ? old_xdg : "";
  setenv("RZ_CONV_CACHE", "/tmp/rz_conv.json", 1);
  CHECK(conv_autotune_cache_path() == "/tmp/rz_conv.json");
  unsetenv("RZ_CONV_CACHE");
  setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  CHECK(conv_autotune_cache_path() == "/tmp/xdg/ranzcr/conv_autotune.json");
  unsetenv("XDG_CACHE_HOME");
  CHECK(conv_autotune_cache_path().ends_with("/.cache/ranzcr/conv_autotune.json"));
  if (old_rz) setenv("RZ_CONV_CACHE", keep_rz.c_str(), 1);
  if (old_xdg) setenv("XDG_CACHE_HOME", keep_xdg.c_str(), 1);
}
