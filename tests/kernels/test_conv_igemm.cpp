// The index logic of the native implicit-GEMM convolutions
// (kernels/common/conv_igemm.h) shared by every variant, and v1, proven on
// the CPU:
//   - FastDivmod against / and %, tap advance against a fresh split, split-K
//     ranges partition the k-tiles; make_igemm_geom's limits;
//   - the v1 tile walks (per element) gather exactly an explicit im2col
//     (im2col_cpu) and, for Dgrad, a naive transposed gather; every in-range
//     element is visited exactly once;
//   - a CPU emulation of the v1 kernel (same tiles and loops) gives Fwd, Dgrad
//     and Wgrad equal to conv2d_*_cpu in double (small-integer inputs: exact);
//   - models/conv_shapes lists exactly the convolutions seresnet152d declares.
// v2 (tensor cores, its tile configurations and swizzles) is proven in
// test_conv_igemm_v2.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/common/conv_igemm.h"
#include "kernels/cpu/conv2d.h"
#include "models/conv_shapes.h"
#include "models/seresnet.h"
#include "tests/kernels/conv_test_util.h"

using namespace rz;
using namespace rz::igemm;
using namespace rz::conv_test;

namespace {

// ---------------------------------------------------------------------------
// v1 emulation: the kernel's block loop with every thread's loads and FMAs.

std::vector<double> emulate_v1(ConvPass p, const IgemmGeom& g, const std::vector<double>& a,
                               const std::vector<double>& b, int splits) {
  const GemmDims d = gemm_dims(p, g);
  const int mt = (d.M + kV1BM - 1) / kV1BM, nt = (d.N + kV1BN - 1) / kV1BN;
  const int k_tiles = (d.K + kV1BK - 1) / kV1BK;
  const size_t mn = static_cast<size_t>(d.M) * static_cast<size_t>(d.N);
  std::vector<double> part(mn * static_cast<size_t>(splits), std::nan(""));
  for (int bz = 0; bz < splits; ++bz)
    for (int bx = 0; bx < mt; ++bx)
      for (int by = 0; by < nt; ++by) {
        const int bm0 = bx * kV1BM, bn0 = by * kV1BN;
        std::vector<double> acc(kV1Threads * kV1TM * kV1TN, 0.0);
        const KRange kr = split_k_range(k_tiles, splits, bz);
        for (int kt = kr.begin; kt < kr.end; ++kt) {
          double As[kV1BK][kV1BM], Bs[kV1BK][kV1BN];
          for (auto& row : As) std::fill(std::begin(row), std::end(row), std::nan(""));
          for (auto& row : Bs) std::fill(std::begin(row), std::end(row), std::nan(""));
          for (int tid = 0; tid < kV1Threads; ++tid) {
            for (int r = 0; r < kV1BM * kV1BK / kV1Threads; ++r) {
              const TileElem e = v1_tile_elem(tid + r * kV1Threads, kV1BM, a_k_contiguous(p));
              REQUIRE((e.mn >= 0 && e.mn < kV1BM && e.k >= 0 && e.k < kV1BK));
              const int off = a_offset(p, g, bm0 + e.mn, kt * kV1BK + e.k);
              REQUIRE(off < static_cast<int>(a.size()));
              As[e.k][e.mn] = off < 0 ? 0.0 : a[static_cast<size_t>(off)];
            }
            for (int r = 0; r < kV1BN * kV1BK / kV1Threads; ++r) {
              const TileElem e = v1_tile_elem(tid + r * kV1Threads, kV1BN, b_k_contiguous(p));
              REQUIRE((e.mn >= 0 && e.mn < kV1BN && e.k >= 0 && e.k < kV1BK));
              const int off = b_offset(p, g, kt * kV1BK + e.k, bn0 + e.mn);
              REQUIRE(off < static_cast<int>(b.size()));
              Bs[e.k][e.mn] = off < 0 ? 0.0 : b[static_cast<size_t>(off)];
            }
          }
          for (int tid = 0; tid < kV1Threads; ++tid) {
            const int ty = tid / 16, tx = tid % 16;
            for (int k = 0; k < kV1BK; ++k)
              for (int i = 0; i < kV1TM; ++i)
                for (int j = 0; j < kV1TN; ++j)
                  acc[static_cast<size_t>((tid * kV1TM + i) * kV1TN + j)] +=
                      As[k][ty + 16 * i] * Bs[k][tx + 16 * j];
          }
        }
        for (int tid = 0; tid < kV1Threads; ++tid)
          for (int i = 0; i < kV1TM; ++i)
            for (int j = 0; j < kV1TN; ++j) {
              const int m = bm0 + tid / 16 + 16 * i, n = bn0 + tid % 16 + 16 * j;
              if (m >= d.M || n >= d.N) continue;
              part[static_cast<size_t>(bz) * mn + static_cast<size_t>(c_offset(d, m, n))] =
                  acc[static_cast<size_t>((tid * kV1TM + i) * kV1TN + j)];
            }
      }
  std::vector<double> out(mn, 0.0);
  for (int z = 0; z < splits; ++z)
    for (size_t i = 0; i < mn; ++i) out[i] += part[static_cast<size_t>(z) * mn + i];
  return out;
}

}  // namespace


TEST_CASE("conv igemm: FastDivmod equals / and % over the int range") {
  std::mt19937 rng(1);
  const int divisors[] = {1,         2,    3,    5,     7,     8,      9,       16,
                          25,        49,   56,   64,    100,   127,    128,     255,
                          256,       1000, 3136, 65535, 65536, 100003, 1 << 20, (1 << 30) + 1,
                          2147483647};
  std::uniform_int_distribution<int> any(0, 2147483647);
  for (int d : divisors) {
    const FastDivmod f = make_fast_divmod(d);
    std::vector<int> ns = {0, 1, d - 1, d, d < 2147483647 ? d + 1 : d, 2147483647, 2147483646};
    for (int i = 0; i < 20000; ++i) ns.push_back(any(rng));
    for (int i = 0; i < 2000; ++i) ns.push_back(i);
    for (int64_t q = 1; q < 2000 && q * d < 2147483647; ++q) {
      ns.push_back(static_cast<int>(q * d));
      ns.push_back(static_cast<int>(q * d - 1));
    }
    for (int n : ns) {
      int q, r;
      fast_divmod(f, n, q, r);
      if (q != n / d || r != n % d) {
        CAPTURE(d);
        CAPTURE(n);
        CHECK(q == n / d);
        CHECK(r == n % d);
        return;
      }
    }
  }
}

TEST_CASE("conv igemm: taps advance like a fresh split, split-K ranges partition the k-tiles") {
  for (int S : {1, 3, 7})
    for (int C : {1, 3, 8, 16, 24, 32, 40, 64, 136}) {
      const FastDivmod ds = make_fast_divmod(S), dc = make_fast_divmod(C);
      for (int k0 = 0; k0 < 40; k0 += 8) {
        Tap t = split_tap(k0, ds, dc);
        for (int k = k0; k < k0 + 40 * 32; k += 32) {
          const Tap f = split_tap(k, ds, dc);
          REQUIRE(t.c == k % C);
          REQUIRE(t.s == (k / C) % S);
          REQUIRE(t.r == k / (C * S));
          REQUIRE((f.r == t.r && f.s == t.s && f.c == t.c));
          advance_tap(t, 32, S, C);
        }
      }
    }
  for (int k_tiles : {1, 2, 7, 64, 1000})
    for (int splits = 1; splits <= std::min(k_tiles, 70); ++splits) {
      int expect = 0;
      for (int z = 0; z < splits; ++z) {
        const KRange r = split_k_range(k_tiles, splits, z);
        REQUIRE(r.begin == expect);
        REQUIRE(r.end > r.begin);  // splits <= k_tiles: none empty
        expect = r.end;
      }
      REQUIRE(expect == k_tiles);
    }
  // choose_splits: bounded by the reduction, the workspace and kMaxSplits.
  CHECK(choose_splits(1000, 100, 132, 64 * 64, 4) == 1);
  CHECK(choose_splits(4, 4096, 132, 256 * 64, 4) == 64);
  CHECK(choose_splits(4, 3, 132, 256 * 64, 4) == 1);
  CHECK(choose_splits(4, 40, 132, 256 * 64, 4) == 10);
  CHECK(choose_splits(1, 1 << 20, 132, int64_t{64} << 20, 4) * (int64_t{64} << 22) <=
        kMaxWorkspaceBytes);
  CHECK(choose_splits(0, 10, 132, 1, 1) == 1);
}

TEST_CASE("conv igemm: make_igemm_geom accepts valid geometries and rejects the rest") {
  IgemmGeom ig;
  CHECK(make_igemm_geom(make_conv2d_geom(2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1), &ig));
  CHECK(ig.OH == 9);
  CHECK(ig.OW == 7);
  CHECK(make_igemm_geom(make_conv2d_geom(0, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1), &ig));   // empty batch
  CHECK(!make_igemm_geom(make_conv2d_geom(1, 2, 2, 5, 6, 3, 3, 1, 1, 0, 0), &ig));  // OH < 1
  Conv2dGeom bad = make_conv2d_geom(1, 9, 9, 5, 6, 3, 3, 1, 1, 1, 1);
  bad.OH = 8;
  CHECK(!make_igemm_geom(bad, &ig));
  CHECK(!make_igemm_geom(make_conv2d_geom(64, 1024, 1024, 64, 8, 1, 1, 1, 1, 0, 0),
                         &ig));  // 2^32 elems
  CHECK(make_igemm_geom(make_conv2d_geom(32, 512, 512, 32, 32, 3, 3, 1, 1, 1, 1), &ig));  // 2^28
  // v2 needs 8-channel vectors on both sides; v1 takes anything valid.
  CHECK(v2_geometry_ok(ConvPass::Fwd, make_conv2d_geom(2, 9, 7, 16, 24, 3, 3, 1, 1, 1, 1)));
  CHECK(!v2_geometry_ok(ConvPass::Fwd, make_conv2d_geom(2, 9, 7, 3, 32, 3, 3, 2, 2, 1, 1)));
  CHECK(!v2_geometry_ok(ConvPass::Wgrad, make_conv2d_geom(2, 9, 7, 16, 12, 3, 3, 1, 1, 1, 1)));
  CHECK(v1_geometry_ok(ConvPass::Wgrad, make_conv2d_geom(2, 9, 7, 3, 5, 7, 7, 2, 2, 3, 3)));
}

TEST_CASE(
    "conv igemm: v1 tile walks gather exactly im2col (Fwd A, Wgrad B) and the Dgrad transpose") {
  std::mt19937 rng(2);
  for (const ConvCase& s : kAnyShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    const std::string shape = case_name(s);
    CAPTURE(shape);
    const Tensors t = random_tensors(g, rng);
    const std::vector<double> col = im2col(g, t.x);
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      const GemmDims d = gemm_dims(p, ig);
      // The operand that is an im2col / transposed gather, seen as [rows][red].
      const bool gather_is_a = p != ConvPass::Wgrad;
      const int rows = gather_is_a ? d.M : d.N, red = d.K;
      const int ext = gather_is_a ? kV1BM : kV1BN;
      const bool kc = gather_is_a ? a_k_contiguous(p) : b_k_contiguous(p);
      const std::vector<double>& src = gather_is_a ? a_tensor(p, t) : b_tensor(p, t);
      std::vector<double> got(static_cast<size_t>(rows) * static_cast<size_t>(red), std::nan(""));
      std::vector<int> visits(got.size(), 0);
      for (int r0 = 0; r0 < rows; r0 += ext)
        for (int k0 = 0; k0 < red; k0 += kV1BK)
          for (int tid = 0; tid < kV1Threads; ++tid)
            for (int round = 0; round < ext * kV1BK / kV1Threads; ++round) {
              const TileElem e = v1_tile_elem(tid + round * kV1Threads, ext, kc);
              const int row = r0 + e.mn, k = k0 + e.k;
              const int off = gather_is_a ? a_offset(p, ig, row, k) : b_offset(p, ig, k, row);
              if (row >= rows || k >= red) {
                REQUIRE(off == -1);
                continue;
              }
              const size_t i =
                  static_cast<size_t>(row) * static_cast<size_t>(red) + static_cast<size_t>(k);
              got[i] = off < 0 ? 0.0 : src[static_cast<size_t>(off)];
              ++visits[i];
            }
      CHECK(std::all_of(visits.begin(), visits.end(), [](int v) { return v == 1; }));
      bool same = true;
      for (int m = 0; m < rows && same; ++m)
        for (int k = 0; k < red && same; ++k) {
          const size_t i =
              static_cast<size_t>(m) * static_cast<size_t>(red) + static_cast<size_t>(k);
          double want;
          if (p == ConvPass::Dgrad)
            want = naive_dgrad_a(g, t.dy, m, k);
          else if (p == ConvPass::Fwd)
            want = col[i];
          else
            want = col[static_cast<size_t>(k) * static_cast<size_t>(d.N) +
                       static_cast<size_t>(m)];  // B[p][j] = im2col[p][j]
          same = got[i] == want;
          if (!same) {
            CAPTURE(m);
            CAPTURE(k);
            CHECK(got[i] == want);
          }
        }
      CHECK(same);
      // The other operand: weights (Fwd, Dgrad) or dy (Wgrad), read directly.
      for (int k = 0; k < red; ++k)
        for (int n = 0; n < (gather_is_a ? d.N : d.M); ++n) {
          const int off = gather_is_a ? b_offset(p, ig, k, n) : a_offset(p, ig, n, k);
          int64_t want;
          if (p == ConvPass::Fwd)
            want = int64_t{n} * g.taps() + k;  // w[n][k]
          else if (p == ConvPass::Dgrad)
            want = (k % g.K) * g.taps() + (k / g.K) * g.C + n;  // w[kk][rs][c]
          else
            want = int64_t{k} * g.K + n;  // dy[p][m]
          if (off != want) {
            CAPTURE(k);
            CAPTURE(n);
            REQUIRE(off == want);
          }
        }
    }
  }
}

TEST_CASE("conv igemm: v1 kernel emulation computes fwd, dgrad and wgrad exactly") {
  std::mt19937 rng(4);
  for (const ConvCase& s : kAnyShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    const std::string shape = case_name(s);
    CAPTURE(shape);
    const Tensors t = random_tensors(g, rng);
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      const std::vector<double> want = reference(p, g, t);
      const GemmDims d = gemm_dims(p, ig);
      const int k_tiles = (d.K + kV1BK - 1) / kV1BK;
      for (int splits : {1, 3}) {
        if (splits > k_tiles || (p != ConvPass::Wgrad && splits > 1)) continue;
        CAPTURE(splits);
        const std::vector<double> got = emulate_v1(p, ig, a_tensor(p, t), b_tensor(p, t), splits);
        REQUIRE(got.size() == want.size());
        CHECK(got == want);
      }
    }
  }
}

TEST_CASE("conv shapes: seresnet152d lists every conv the model declares, in order") {
  const ResNetConfig cfg = resnet_config("seresnet152d");
  const std::vector<ConvLayer> layers = resnet_conv_layers(cfg, 2, 64);
  // 3 stem + 50 blocks x (3 convs + 2 SE fcs) + 4 shortcut convs.
  CHECK(layers.size() == 3u + 50u * 5u + 4u);
  auto model = create_resnet(cfg, 0);
  std::vector<std::pair<std::string, std::vector<int64_t>>> convs;
  for (const auto& [name, t] : model->named_parameters())
    if (t.dim() == 4) convs.push_back({name, {t.size(0), t.size(1), t.size(2), t.size(3)}});
  REQUIRE(convs.size() == layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const Conv2dGeom& g = layers[i].geom;
    CAPTURE(layers[i].name);
    CHECK(convs[i].first == layers[i].name + ".weight");
    CHECK(convs[i].second == std::vector<int64_t>{g.K, g.R, g.S, g.C});
    CHECK(layers[i].se == (layers[i].name.find(".se.") != std::string::npos));
    if (layers[i].se) CHECK((g.H == 1 && g.W == 1));
    CHECK(g.N == 2);
  }
  // A few spatial sizes at 64x64 (stem /2, maxpool /2, stages /1 /2 /2 /2).
  std::map<std::string, Conv2dGeom> by_name;
  for (const ConvLayer& l : layers) by_name[l.name] = l.geom;
  const Conv2dGeom& stem = by_name.at("conv1.0");
  CHECK((stem.H == 64 && stem.C == 3 && stem.K == 32 && stem.R == 3 && stem.sh == 2 &&
         stem.OH == 32));
  CHECK((by_name.at("conv1.6").C == 32 && by_name.at("conv1.6").K == 64));
  const Conv2dGeom& l1 = by_name.at("layer1.0.conv2");
  CHECK((l1.H == 16 && l1.C == 64 && l1.K == 64 && l1.sh == 1 && l1.OH == 16));
  const Conv2dGeom& l2 = by_name.at("layer2.0.conv2");
  CHECK((l2.H == 16 && l2.C == 128 && l2.sh == 2 && l2.OH == 8));
  const Conv2dGeom& ds = by_name.at("layer3.0.downsample.1");  // after AvgPool2d(2, 2)
  CHECK((ds.H == 4 && ds.C == 512 && ds.K == 1024 && ds.R == 1 && ds.sh == 1 && ds.OH == 4));
  const Conv2dGeom& l4 = by_name.at("layer4.2.conv3");
  CHECK((l4.H == 2 && l4.C == 512 && l4.K == 2048 && l4.OH == 2));
  const Conv2dGeom& se = by_name.at("layer4.2.se.fc1");
  CHECK((se.C == 2048 && se.K == se_reduced_channels(2048)));
  CHECK(by_name.count("layer1.0.downsample.1") == 1);  // channel change, stride 1

  // Unique shapes: each distinct once, first-appearance order, covering all.
  const std::vector<Conv2dGeom> uniq = resnet_conv_shapes(cfg, 2, 64);
  CHECK(uniq.size() < layers.size());
  for (size_t i = 0; i < uniq.size(); ++i)
    for (size_t j = i + 1; j < uniq.size(); ++j) CHECK(!same_conv_geom(uniq[i], uniq[j]));
  for (const ConvLayer& l : layers)
    CHECK(std::any_of(uniq.begin(), uniq.end(),
                      [&](const Conv2dGeom& u) { return same_conv_geom(u, l.geom); }));
  CHECK(resnet_conv_shapes(cfg, 2, 64, false).size() == layers.size());
}
