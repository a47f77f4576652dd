// v2 of the native convolutions (kernels/common/conv_igemm.h, section v2;
// kernels/cuda/conv_native_v2.cu), proven on the CPU in each of its block-tile
// configurations (128x128, 128x64, 64x128), whatever the selection rule
// would pick:
//   - the loaders' 16-byte chunks gather exactly im2col / the Dgrad transpose /
//     the weights, every in-range element once;
//   - a CPU emulation of the kernel (same tiles, stages, k-steps, chunk
//     predicates, swizzled shared memory; ldmatrix and mma.m16n8k16 emulated
//     from the PTX fragment layouts; cp.async completing either at issue or as
//     late as wait_group allows) gives Fwd, Dgrad and Wgrad equal to
//     conv2d_*_cpu bit for bit (small-integer inputs);
//   - the Fwd statistics epilogue: per-M-tile partials of the configuration's BM;
//   - the swizzled layouts are bijections onto 16-byte aligned chunks, and every
//     ldmatrix phase and cp.async store is bank-conflict free;
//   - the selection rule, and that seresnet152d's shapes use every tile.
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

#include "kernels/common/bf16.h"
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
// v2 emulation. Shared memory holds bf16 bit patterns; ldmatrix and mma follow
// the PTX ISA fragment layouts (written here independently of conv_igemm.h):
//   ldmatrix .x4: lane 8q + r gives the address of row r of matrix q; lane l
//     receives, of each matrix q, elements (l/4, 2*(l%4)) and (l/4, 2*(l%4)+1)
//     (with .trans: (2*(l%4), l/4) and (2*(l%4)+1, l/4)), the first in the low half.
//   mma.m16n8k16 .row.col, g = l/4, t = l%4: A regs (g, 2t..), (g+8, 2t..),
//     (g, 2t+8..), (g+8, 2t+8..); B regs (k = 2t.., n = g), (k = 2t+8.., n = g);
//     D regs (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).

using Regs4 = uint32_t[4];

uint16_t bf16_bits(double v) {
  return f32_to_bf16(static_cast<float>(v)).bits;
}
float bits_f32(uint32_t half) {
  return bf16_to_f32(bf16{static_cast<uint16_t>(half & 0xffffu)});
}

void ldmatrix_x4(const std::vector<uint16_t>& smem, const int (&addr)[32], bool trans,
                 uint32_t (&out)[32][4]) {
  for (int q = 0; q < 4; ++q) {
    uint16_t m[8][8];
    for (int r = 0; r < 8; ++r) {
      const int a = addr[8 * q + r];
      REQUIRE((a >= 0 && a % 8 == 0 && a + 8 <= static_cast<int>(smem.size())));
      for (int c = 0; c < 8; ++c) m[r][c] = smem[static_cast<size_t>(a + c)];
    }
    for (int l = 0; l < 32; ++l) {
      const int i = l / 4, j = 2 * (l % 4);
      const uint32_t lo = trans ? m[j][i] : m[i][j];
      const uint32_t hi = trans ? m[j + 1][i] : m[i][j + 1];
      out[l][q] = lo | (hi << 16);
    }
  }
}

void mma_16816(float (&d)[32][4], const uint32_t (&a)[32][4], const uint32_t (&b)[32][2]) {
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h) {
      const int sh = 16 * h;
      A[g][2 * t + h] = bits_f32(a[l][0] >> sh);
      A[g + 8][2 * t + h] = bits_f32(a[l][1] >> sh);
      A[g][2 * t + 8 + h] = bits_f32(a[l][2] >> sh);
      A[g + 8][2 * t + 8 + h] = bits_f32(a[l][3] >> sh);
      B[2 * t + h][g] = bits_f32(b[l][0] >> sh);
      B[2 * t + 8 + h][g] = bits_f32(b[l][1] >> sh);
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; ++e) {
      float s = d[l][e];
      for (int k = 0; k < 16; ++k) s += A[rows[e]][k] * B[k][cols[e]];
      d[l][e] = s;
    }
  }
}

struct Copy16 {
  int dst, src;  // shared element offset, source element offset (-1: zero-fill)
  bool is_a;
};

template <class Tile, typename Loader>
struct V2Emulation {
  ConvPass p;
  const IgemmGeom& g;
  const std::vector<uint16_t>& a;
  const std::vector<uint16_t>& b;
  bool late;  // cp.async data lands at the latest point wait_group allows, else at issue

  std::vector<uint16_t> smem;
  std::vector<Copy16> open;
  std::vector<std::vector<Copy16>> groups;

  void apply(const Copy16& c) {
    const std::vector<uint16_t>& src = c.is_a ? a : b;
    REQUIRE((c.dst >= 0 && c.dst % 8 == 0 && c.dst + 8 <= static_cast<int>(smem.size())));
    if (c.src >= 0) {
      REQUIRE(c.src % 8 == 0);  // 16-byte aligned source
      REQUIRE(c.src + 8 <= static_cast<int>(src.size()));
    }
    for (int e = 0; e < 8; ++e)
      smem[static_cast<size_t>(c.dst + e)] =
          c.src < 0 ? uint16_t{0} : src[static_cast<size_t>(c.src + e)];
  }
  void issue(const Copy16& c) {
    if (late)
      open.push_back(c);
    else
      apply(c);
  }
  void commit() {
    groups.push_back(open);
    open.clear();
  }
  void wait(size_t pending) {
    while (groups.size() > pending) {
      for (const Copy16& c : groups.front()) apply(c);
      groups.erase(groups.begin());
    }
  }

  // Writes the fp32 accumulators of split bz into part as C[M][N] (unwritten:
  // NaN). With stats != nullptr (Fwd, one split) also the epilogue's
  // statistics partials of the stored bf16 values (identity epilogue), in the
  // kernel's order: per thread over (mi, half), a xor tree over lane bits
  // 2..4, then the WarpsM warp rows through red[WarpsM][2][BN], added in
  // warp_m order by thread tid < BN into stats[(bx*2 + j)*N + bn0 + tid].
  void run_block(int bx, int by, int bz, int k_tiles, int splits, std::vector<float>& part,
                 std::vector<float>* stats) {
    const GemmDims d = gemm_dims(p, g);
    const int bm0 = bx * Tile::BM, bn0 = by * Tile::BN;
    const KRange kr = split_k_range(k_tiles, splits, bz);
    const int nk = kr.end - kr.begin;
    smem.assign(static_cast<size_t>(kV2Stages * Tile::StageElems), uint16_t{0x7fc1});  // NaN
    groups.clear();
    open.clear();
    std::vector<Loader> ld(Tile::Threads);
    for (int tid = 0; tid < Tile::Threads; ++tid)
      ld[static_cast<size_t>(tid)].init(g, tid, bm0, bn0, kr.begin);
    auto load_tile = [&](int stage) {
      for (int tid = 0; tid < Tile::Threads; ++tid) {
        V2Chunk ca[Tile::AChunks], cb[Tile::BChunks];
        Loader& l = ld[static_cast<size_t>(tid)];
        l.chunks(g, tid, ca, cb);
        for (const V2Chunk& c : ca) {
          REQUIRE((c.smem >= 0 && c.smem < Tile::ATileElems));
          issue({stage * Tile::StageElems + c.smem, c.src, true});
        }
        for (const V2Chunk& c : cb) {
          REQUIRE((c.smem >= 0 && c.smem < Tile::BTileElems));
          issue({stage * Tile::StageElems + Tile::ATileElems + c.smem, c.src, false});
        }
        l.advance(g);
      }
    };
    static float acc[Tile::Warps][kV2MI][kV2NI][32][4];
    std::memset(acc, 0, sizeof acc);
    for (int s = 0; s < kV2Stages - 1; ++s) {
      if (s < nk) load_tile(s);
      commit();
    }
    for (int i = 0; i < nk; ++i) {
      wait(kV2Stages - 2);
      const int next = i + kV2Stages - 1;
      if (next < nk) load_tile(next % kV2Stages);
      commit();
      const int sa = (i % kV2Stages) * Tile::StageElems, sb = sa + Tile::ATileElems;
      for (int warp = 0; warp < Tile::Warps; ++warp) {
        const int wm = warp % Tile::WarpsM, wn = warp / Tile::WarpsM;
        for (int kk = 0; kk < kV2BK / 16; ++kk) {
          static uint32_t af[kV2MI][32][4], bfr[kV2NI][32][2];
          for (int mi = 0; mi < kV2MI; ++mi) {
            int addr[32];
            for (int lane = 0; lane < 32; ++lane) {
              const int o = v2_ldsm_a_offset<Tile>(p, wm, mi, kk, lane);
              REQUIRE((o >= 0 && o + 8 <= Tile::ATileElems));
              addr[lane] = sa + o;
            }
            ldmatrix_x4(smem, addr, v2_a_mnmajor(p), af[mi]);
          }
          for (int np = 0; np < kV2NI / 2; ++np) {
            int addr[32];
            uint32_t r[32][4];
            for (int lane = 0; lane < 32; ++lane) {
              const int o = v2_ldsm_b_offset<Tile>(p, wn, np, kk, lane);
              REQUIRE((o >= 0 && o + 8 <= Tile::BTileElems));
              addr[lane] = sb + o;
            }
            ldmatrix_x4(smem, addr, v2_b_mnmajor(p), r);
            for (int lane = 0; lane < 32; ++lane) {
              bfr[2 * np][lane][0] = r[lane][0];
              bfr[2 * np][lane][1] = r[lane][1];
              bfr[2 * np + 1][lane][0] = r[lane][2];
              bfr[2 * np + 1][lane][1] = r[lane][3];
            }
          }
          for (int mi = 0; mi < kV2MI; ++mi)
            for (int ni = 0; ni < kV2NI; ++ni) mma_16816(acc[warp][mi][ni], af[mi], bfr[ni]);
        }
      }
    }
    wait(0);
    // csum[warp][lane][ni][e] / csq: the stats columns of each thread.
    static float csum[Tile::Warps][32][kV2NI][2], csq[Tile::Warps][32][kV2NI][2];
    std::memset(csum, 0, sizeof csum);
    std::memset(csq, 0, sizeof csq);
    for (int warp = 0; warp < Tile::Warps; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int mi = 0; mi < kV2MI; ++mi)
          for (int ni = 0; ni < kV2NI; ++ni)
            for (int half = 0; half < 2; ++half) {
              const TileRC rc =
                  v2_acc_coord(warp % Tile::WarpsM, warp / Tile::WarpsM, mi, ni, lane, half);
              REQUIRE((rc.row >= 0 && rc.row < Tile::BM && rc.col >= 0 && rc.col + 1 < Tile::BN));
              const int m = bm0 + rc.row, n = bn0 + rc.col;
              if (m >= d.M || n >= d.N) continue;
              REQUIRE(n % 2 == 0);
              REQUIRE(n + 1 < d.N);
              const size_t off =
                  static_cast<size_t>(bz) * static_cast<size_t>(d.M) * static_cast<size_t>(d.N) +
                  static_cast<size_t>(c_offset(d, m, n));
              for (int e = 0; e < 2; ++e) {
                const float v = acc[warp][mi][ni][lane][2 * half + e];
                REQUIRE(std::isnan(part[off + static_cast<size_t>(e)]));  // written once
                part[off + static_cast<size_t>(e)] = v;
                const float y = bf16_to_f32(f32_to_bf16(v));
                csum[warp][lane][ni][e] += y;
                csq[warp][lane][ni][e] += y * y;
              }
            }
    if (stats == nullptr) return;
    for (int warp = 0; warp < Tile::Warps; ++warp)
      for (int ni = 0; ni < kV2NI; ++ni)
        for (int e = 0; e < 2; ++e)
          for (int x = 4; x < 32; x <<= 1) {
            float s[32], q[32];
            for (int l = 0; l < 32; ++l) {
              s[l] = csum[warp][l][ni][e] + csum[warp][l ^ x][ni][e];
              q[l] = csq[warp][l][ni][e] + csq[warp][l ^ x][ni][e];
            }
            for (int l = 0; l < 32; ++l) csum[warp][l][ni][e] = s[l], csq[warp][l][ni][e] = q[l];
          }
    // The kernel's scratch overlays the ring: it must fit there.
    REQUIRE(static_cast<size_t>(Tile::WarpsM * 2 * Tile::BN) * 4 <=
            static_cast<size_t>(Tile::SmemBytes));
    std::vector<float> red(static_cast<size_t>(Tile::WarpsM * 2 * Tile::BN), std::nanf(""));
    for (int warp = 0; warp < Tile::Warps; ++warp)
      for (int lane = 0; lane < 4; ++lane)
        for (int ni = 0; ni < kV2NI; ++ni)
          for (int e = 0; e < 2; ++e) {
            const int wm = warp % Tile::WarpsM;
            const int col = v2_acc_coord(wm, warp / Tile::WarpsM, 0, ni, lane, 0).col + e;
            const size_t i0 = static_cast<size_t>((wm * 2 + 0) * Tile::BN + col);
            const size_t i1 = static_cast<size_t>((wm * 2 + 1) * Tile::BN + col);
            REQUIRE(std::isnan(red[i0]));  // each scratch slot written by one thread
            red[i0] = csum[warp][lane][ni][e];
            red[i1] = csq[warp][lane][ni][e];
          }
    for (int tid = 0; tid < Tile::Threads; ++tid) {
      if (!(tid < Tile::BN && bn0 + tid < d.N)) continue;
      float s = 0.f, q = 0.f;
      for (int wm = 0; wm < Tile::WarpsM; ++wm) {
        s += red[static_cast<size_t>((wm * 2 + 0) * Tile::BN + tid)];
        q += red[static_cast<size_t>((wm * 2 + 1) * Tile::BN + tid)];
      }
      for (int j = 0; j < 2; ++j) {
        const size_t o = static_cast<size_t>((int64_t{bx} * 2 + j) * d.N + bn0 + tid);
        REQUIRE(o < stats->size());
        REQUIRE(std::isnan((*stats)[o]));  // written exactly once
        (*stats)[o] = j == 0 ? s : q;
      }
    }
  }
};

// The fp32 result of the v2 kernel in configuration Tile (partials summed in
// split order); with stats != nullptr (Fwd, splits == 1) also its statistics
// partials, [ceil(M / BM)][2][N].
template <class Tile, typename Loader>
std::vector<float> emulate_v2(ConvPass p, const IgemmGeom& g, const std::vector<double>& a,
                              const std::vector<double>& b, int splits, bool late,
                              std::vector<float>* stats) {
  std::vector<uint16_t> a16(a.size()), b16(b.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = bf16_bits(a[i]);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = bf16_bits(b[i]);
  const GemmDims d = gemm_dims(p, g);
  const int mt = (d.M + Tile::BM - 1) / Tile::BM, nt = (d.N + Tile::BN - 1) / Tile::BN;
  const int k_tiles = (d.K + kV2BK - 1) / kV2BK;
  const size_t mn = static_cast<size_t>(d.M) * static_cast<size_t>(d.N);
  std::vector<float> part(mn * static_cast<size_t>(splits), std::nanf(""));
  if (stats != nullptr) stats->assign(static_cast<size_t>(mt) * 2 * d.N, std::nanf(""));
  V2Emulation<Tile, Loader> emu{p, g, a16, b16, late, {}, {}, {}};
  for (int bz = 0; bz < splits; ++bz)
    for (int bx = 0; bx < mt; ++bx)
      for (int by = 0; by < nt; ++by) emu.run_block(bx, by, bz, k_tiles, splits, part, stats);
  std::vector<float> out(mn, 0.f);
  for (int z = 0; z < splits; ++z)
    for (size_t i = 0; i < mn; ++i) out[i] += part[static_cast<size_t>(z) * mn + i];
  return out;
}

template <class Tile>
std::vector<float> emulate_v2_pass(ConvPass p, const IgemmGeom& g, const std::vector<double>& a,
                                   const std::vector<double>& b, int splits, bool late,
                                   std::vector<float>* stats = nullptr) {
  if (p == ConvPass::Fwd)
    return emulate_v2<Tile, V2FwdLoader<Tile>>(p, g, a, b, splits, late, stats);
  if (p == ConvPass::Dgrad)
    return emulate_v2<Tile, V2DgradLoader<Tile>>(p, g, a, b, splits, late, nullptr);
  return emulate_v2<Tile, V2WgradLoader<Tile>>(p, g, a, b, splits, late, nullptr);
}


// Calls f.template operator()<Tile>() for every v2 configuration.
template <class F>
void for_each_v2_tile(F&& f) {
  f.template operator()<V2Tile128x128>();
  f.template operator()<V2Tile128x64>();
  f.template operator()<V2Tile64x128>();
}

// The operand a v2 configuration's loaders gather, walked tile by tile and
// chunk by chunk, as [rows][red]: A for Fwd/Dgrad (K-major chunks of rows),
// B for Wgrad (MN-major chunks of k rows). Checks each in-range element is
// visited once, zero-filled chunks lie wholly outside, smem slots follow the
// layout, and the values equal im2col / the naive Dgrad transpose. The other
// operand (weights, dy) is checked the same way for its shape and offsets.
template <class Tile>
void check_v2_loaders(ConvPass p, const Conv2dGeom& g, const IgemmGeom& ig, const Tensors& t,
                      const std::vector<double>& col) {
  const GemmDims d = gemm_dims(p, ig);
  const int k_tiles = (d.K + kV2BK - 1) / kV2BK;
  const int mt = (d.M + Tile::BM - 1) / Tile::BM, nt = (d.N + Tile::BN - 1) / Tile::BN;
  const std::vector<double>& asrc = a_tensor(p, t);
  const std::vector<double>& bsrc = b_tensor(p, t);
  // got_a[m][k], got_b[n][k] (B stored transposed: N rows, reduction columns).
  const size_t a_elems = static_cast<size_t>(d.M) * static_cast<size_t>(d.K);
  const size_t b_elems = static_cast<size_t>(d.N) * static_cast<size_t>(d.K);
  std::vector<double> got_a(a_elems, std::nan("")), got_b(b_elems, std::nan(""));
  std::vector<int> visits_a(a_elems, 0), visits_b(b_elems, 0);
  const bool amn = v2_a_mnmajor(p), bmn = v2_b_mnmajor(p);
  // One chunk: 8 elements along k (K-major) or along M/N (MN-major).
  auto record = [&](const V2Chunk& c, const ChunkCoord& cc, bool mnmajor, int extent, int r0,
                    int k0, int rows, const std::vector<double>& src, std::vector<double>& got,
                    std::vector<int>& visits) {
    REQUIRE(c.smem == (mnmajor ? (extent == 128 ? mnmajor_offset<128>(cc.first, cc.second)
                                                : mnmajor_offset<64>(cc.first, cc.second))
                               : kmajor_offset(cc.first, cc.second)));
    if (c.src >= 0) REQUIRE(c.src % 8 == 0);
    const int row0 = mnmajor ? r0 + cc.second * 8 : r0 + cc.first;
    const int kb = mnmajor ? k0 + cc.first : k0 + cc.second * 8;
    for (int e = 0; e < 8; ++e) {
      const int row = mnmajor ? row0 + e : row0, k = mnmajor ? kb : kb + e;
      if (row >= rows || k >= d.K) {
        REQUIRE(c.src < 0);  // whole chunk outside: C, K, RSC are multiples of 8
        continue;
      }
      const size_t idx =
          static_cast<size_t>(row) * static_cast<size_t>(d.K) + static_cast<size_t>(k);
      got[idx] = c.src < 0 ? 0.0 : src[static_cast<size_t>(c.src + e)];
      ++visits[idx];
    }
  };
  // Block (bx, 0) covers A rows, block (0, by) covers B rows: walk the M tiles
  // for A and the N tiles for B (the loaders' A state depends only on bm0,
  // their B state only on bn0).
  for (int tile = 0; tile < std::max(mt, nt); ++tile)
    for (int tid = 0; tid < Tile::Threads; ++tid) {
      const int bm0 = std::min(tile, mt - 1) * Tile::BM, bn0 = std::min(tile, nt - 1) * Tile::BN;
      V2FwdLoader<Tile> lf;
      V2DgradLoader<Tile> ld;
      V2WgradLoader<Tile> lw;
      lf.init(ig, tid, bm0, bn0, 0);
      ld.init(ig, tid, bm0, bn0, 0);
      lw.init(ig, tid, bm0, bn0, 0);
      for (int kt = 0; kt < k_tiles; ++kt) {
        V2Chunk ca[Tile::AChunks], cb[Tile::BChunks];
        if (p == ConvPass::Fwd) lf.chunks(ig, tid, ca, cb);
        if (p == ConvPass::Dgrad) ld.chunks(ig, tid, ca, cb);
        if (p == ConvPass::Wgrad) lw.chunks(ig, tid, ca, cb);
        if (tile < mt)
          for (int i = 0; i < Tile::AChunks; ++i)
            record(ca[i], v2_a_chunk<Tile>(amn, tid, i), amn, Tile::BM, bm0, kt * kV2BK, d.M, asrc,
                   got_a, visits_a);
        if (tile < nt)
          for (int i = 0; i < Tile::BChunks; ++i)
            record(cb[i], v2_b_chunk<Tile>(bmn, tid, i), bmn, Tile::BN, bn0, kt * kV2BK, d.N, bsrc,
                   got_b, visits_b);
        lf.advance(ig);
        ld.advance(ig);
        lw.advance(ig);
      }
    }
  CHECK(std::all_of(visits_a.begin(), visits_a.end(), [](int v) { return v == 1; }));
  CHECK(std::all_of(visits_b.begin(), visits_b.end(), [](int v) { return v == 1; }));
  int64_t bad = 0;
  for (int m = 0; m < d.M; ++m)
    for (int k = 0; k < d.K; ++k) {
      const size_t i = static_cast<size_t>(m) * static_cast<size_t>(d.K) + static_cast<size_t>(k);
      double want;
      if (p == ConvPass::Dgrad)
        want = naive_dgrad_a(g, t.dy, m, k);
      else if (p == ConvPass::Fwd)
        want = col[i];
      else
        want = t.dy[static_cast<size_t>(k) * static_cast<size_t>(d.M) + static_cast<size_t>(m)];
      bad += got_a[i] != want;
    }
  for (int n = 0; n < d.N; ++n)
    for (int k = 0; k < d.K; ++k) {
      const size_t i = static_cast<size_t>(n) * static_cast<size_t>(d.K) + static_cast<size_t>(k);
      double want;
      if (p == ConvPass::Fwd)
        want = t.w[i];                // w[n][k]
      else if (p == ConvPass::Dgrad)  // w[kk][r][s][n], k = (r, s, kk)
        want = t.w[static_cast<size_t>((k % g.K) * g.taps() + (k / g.K) * g.C + n)];
      else  // B[p][j] = im2col[p][j]
        want = col[static_cast<size_t>(k) * static_cast<size_t>(d.N) + static_cast<size_t>(n)];
      bad += got_b[i] != want;
    }
  CHECK(bad == 0);
}

// A 16-byte-per-lane shared access is conflict free when each group of 8
// lanes (one 128-byte wavefront) touches 8 distinct 16-byte bank groups.
bool conflict_free(const int (&elem)[32]) {
  for (int q = 0; q < 4; ++q) {
    std::set<int> banks;
    for (int r = 0; r < 8; ++r) banks.insert((elem[8 * q + r] * 2 / 16) % 8);
    if (banks.size() != 8) return false;
  }
  return true;
}

// The swizzled tiles of configuration Tile: every layout a bijection onto the
// tile's 16-byte chunks, every chunk of A and B assigned to exactly one
// (thread, i), every ldmatrix phase of every warp and every warp's cp.async
// stores conflict free.
template <class Tile>
void check_v2_swizzles() {
  auto layout_ok = [](bool mnmajor, int extent, int tile_elems) {
    std::set<int> seen;
    bool ok = true;
    for (int row = 0; row < (mnmajor ? kV2BK : extent); ++row)
      for (int c = 0; c < (mnmajor ? extent : kV2BK) / 8; ++c) {
        const int o = !mnmajor        ? kmajor_offset(row, c)
                      : extent == 128 ? mnmajor_offset<128>(row, c)
                                      : mnmajor_offset<64>(row, c);
        ok = ok && o % 8 == 0 && o >= 0 && o < tile_elems;
        seen.insert(o);
      }
    return ok && seen.size() == static_cast<size_t>(tile_elems / 8);
  };
  for (bool mn : {false, true}) {
    CHECK(layout_ok(mn, Tile::BM, Tile::ATileElems));
    CHECK(layout_ok(mn, Tile::BN, Tile::BTileElems));
  }

  // Chunk coordinates: each chunk of the A and B tiles exactly once.
  for (bool mn : {false, true})
    for (bool is_a : {true, false}) {
      const int extent = is_a ? Tile::BM : Tile::BN;
      const int per = is_a ? Tile::AChunks : Tile::BChunks;
      std::set<std::pair<int, int>> seen;
      for (int tid = 0; tid < Tile::Threads; ++tid)
        for (int i = 0; i < per; ++i) {
          const ChunkCoord c = is_a ? v2_a_chunk<Tile>(mn, tid, i) : v2_b_chunk<Tile>(mn, tid, i);
          CHECK((mn ? (c.first < kV2BK && c.second < extent / 8)
                    : (c.first < extent && c.second < kV2BK / 8)));
          // The loaders share one kc (K-major) or column c (MN-major) per thread.
          const ChunkCoord c0 = is_a ? v2_a_chunk<Tile>(mn, tid, 0) : v2_b_chunk<Tile>(mn, tid, 0);
          CHECK(c.second == c0.second);
          seen.insert({c.first, c.second});
        }
      CHECK(seen.size() == static_cast<size_t>(extent * kV2BK / 8));
    }

  for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad})
    for (int kk = 0; kk < kV2BK / 16; ++kk) {
      for (int wm = 0; wm < Tile::WarpsM; ++wm)
        for (int mi = 0; mi < kV2MI; ++mi) {
          int e[32];
          for (int l = 0; l < 32; ++l) e[l] = v2_ldsm_a_offset<Tile>(p, wm, mi, kk, l);
          CHECK(conflict_free(e));
        }
      for (int wn = 0; wn < Tile::WarpsN; ++wn)
        for (int np = 0; np < kV2NI / 2; ++np) {
          int e[32];
          for (int l = 0; l < 32; ++l) e[l] = v2_ldsm_b_offset<Tile>(p, wn, np, kk, l);
          CHECK(conflict_free(e));
        }
    }
  for (bool mn : {false, true})
    for (int warp = 0; warp < Tile::Warps; ++warp) {
      for (int i = 0; i < Tile::AChunks; ++i) {
        int e[32];
        for (int l = 0; l < 32; ++l) {
          const ChunkCoord c = v2_a_chunk<Tile>(mn, warp * 32 + l, i);
          e[l] =
              mn ? mnmajor_offset<Tile::BM>(c.first, c.second) : kmajor_offset(c.first, c.second);
        }
        CHECK(conflict_free(e));
      }
      for (int i = 0; i < Tile::BChunks; ++i) {
        int e[32];
        for (int l = 0; l < 32; ++l) {
          const ChunkCoord c = v2_b_chunk<Tile>(mn, warp * 32 + l, i);
          e[l] =
              mn ? mnmajor_offset<Tile::BN>(c.first, c.second) : kmajor_offset(c.first, c.second);
        }
        CHECK(conflict_free(e));
      }
    }
  // Accumulators: the warps' fragments cover the block tile once.
  std::set<std::pair<int, int>> cells;
  for (int warp = 0; warp < Tile::Warps; ++warp)
    for (int mi = 0; mi < kV2MI; ++mi)
      for (int ni = 0; ni < kV2NI; ++ni)
        for (int lane = 0; lane < 32; ++lane)
          for (int half = 0; half < 2; ++half) {
            const TileRC rc =
                v2_acc_coord(warp % Tile::WarpsM, warp / Tile::WarpsM, mi, ni, lane, half);
            cells.insert({rc.row, rc.col});
            cells.insert({rc.row, rc.col + 1});
            CHECK((rc.row < Tile::BM && rc.col + 1 < Tile::BN));
          }
  CHECK(cells.size() == static_cast<size_t>(Tile::BM * Tile::BN));
}

}  // namespace

TEST_CASE(
    "conv igemm: v2 loader chunks gather exactly im2col / the Dgrad transpose / the weights, once "
    "each, in every tile configuration") {
  std::mt19937 rng(3);
  for (const ConvCase& s : kVecShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    const std::string shape = case_name(s);
    CAPTURE(shape);
    const Tensors t = random_tensors(g, rng);
    const std::vector<double> col = im2col(g, t.x);
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      REQUIRE(v2_geometry_ok(p, g));
      for_each_v2_tile([&]<class Tile>() {
        const int bm = Tile::BM, bn = Tile::BN;
        CAPTURE(bm);
        CAPTURE(bn);
        check_v2_loaders<Tile>(p, g, ig, t, col);
      });
    }
  }
}

TEST_CASE(
    "conv igemm: v2 kernel emulation (cp.async ring, ldmatrix, mma) computes all passes exactly in "
    "every tile configuration") {
  std::mt19937 rng(5);
  for (const ConvCase& s : kVecShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    const std::string shape = case_name(s);
    CAPTURE(shape);
    const Tensors t = random_tensors(g, rng);
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      const std::vector<double> want = reference(p, g, t);
      const GemmDims d = gemm_dims(p, ig);
      const int k_tiles = (d.K + kV2BK - 1) / kV2BK;
      for_each_v2_tile([&]<class Tile>() {
        const int bm = Tile::BM, bn = Tile::BN;
        CAPTURE(bm);
        CAPTURE(bn);
        for (bool late : {false, true})
          for (int splits : {1, 2}) {
            if (splits > k_tiles || (p != ConvPass::Wgrad && splits > 1)) continue;
            CAPTURE(late);
            CAPTURE(splits);
            const std::vector<float> got =
                emulate_v2_pass<Tile>(p, ig, a_tensor(p, t), b_tensor(p, t), splits, late);
            REQUIRE(got.size() == want.size());
            int64_t bad = 0;
            for (size_t i = 0; i < want.size(); ++i) bad += static_cast<double>(got[i]) != want[i];
            CHECK(bad == 0);
            // The epilogue's bf16 rounding of the exact sums.
            for (size_t i = 0; i < want.size(); ++i)
              REQUIRE(f32_to_bf16(got[i]).bits == f32_to_bf16(static_cast<float>(want[i])).bits);
          }
      });
    }
  }
}

TEST_CASE(
    "conv igemm: v2 Fwd statistics partials are the per-M-tile column sums of the stored values, "
    "with tiles of the configuration's BM") {
  std::mt19937 rng(6);
  for (const ConvCase& s : kVecShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    const std::string shape = case_name(s);
    CAPTURE(shape);
    const Tensors t = random_tensors(g, rng);
    const GemmDims d = gemm_dims(ConvPass::Fwd, ig);
    const std::vector<double> y = reference(ConvPass::Fwd, g, t);
    for_each_v2_tile([&]<class Tile>() {
      const int bm = Tile::BM, bn = Tile::BN;
      CAPTURE(bm);
      CAPTURE(bn);
      std::vector<float> stats;
      const std::vector<float> got =
          emulate_v2_pass<Tile>(ConvPass::Fwd, ig, t.x, t.w, 1, false, &stats);
      const int tiles = (d.M + Tile::BM - 1) / Tile::BM;
      REQUIRE(stats.size() == static_cast<size_t>(tiles) * 2 * static_cast<size_t>(d.N));
      int64_t bad = 0;
      for (int tile = 0; tile < tiles; ++tile)
        for (int n = 0; n < d.N; ++n) {
          double sum = 0, sq = 0, mag = 0;
          for (int m = tile * Tile::BM; m < std::min(d.M, (tile + 1) * Tile::BM); ++m) {
            const double v = bf16_to_f32(
                f32_to_bf16(static_cast<float>(y[static_cast<size_t>(c_offset(d, m, n))])));
            sum += v;
            sq += v * v;
            mag += v * v;
          }
          const double got_s = stats[static_cast<size_t>((tile * 2 + 0) * d.N + n)];
          const double got_q = stats[static_cast<size_t>((tile * 2 + 1) * d.N + n)];
          // Sums of small integers are exact in fp32; squares may round.
          bad += got_s != sum;
          bad += std::fabs(got_q - sq) > 1e-6 * mag;
        }
      CHECK(bad == 0);
    });
  }
}

TEST_CASE(
    "conv igemm: v2 swizzled tiles are 16-byte aligned bijections, conflict-free for ldmatrix and "
    "cp.async, in every tile configuration") {
  for_each_v2_tile([&]<class Tile>() {
    const int bm = Tile::BM, bn = Tile::BN;
    CAPTURE(bm);
    CAPTURE(bn);
    check_v2_swizzles<Tile>();
  });
  // The configurations themselves.
  CHECK((V2Tile128x128::Threads == 256 && V2Tile128x128::WarpsM == 2 &&
         V2Tile128x128::WarpsN == 4 && V2Tile128x128::AChunks == 2 && V2Tile128x128::BChunks == 2 &&
         V2Tile128x128::SmemBytes == 48 * 1024));
  CHECK((V2Tile128x64::Threads == 128 && V2Tile128x64::WarpsM == 2 && V2Tile128x64::WarpsN == 2 &&
         V2Tile128x64::AChunks == 4 && V2Tile128x64::BChunks == 2));
  CHECK((V2Tile64x128::Threads == 128 && V2Tile64x128::WarpsM == 1 && V2Tile64x128::WarpsN == 4 &&
         V2Tile64x128::AChunks == 2 && V2Tile64x128::BChunks == 4));
}

TEST_CASE("conv igemm: v2 tile selection rule, and every tile serves seresnet152d") {
  auto pick = [](int M, int N) {
    const V2TileShape t = v2_pick_tile(GemmDims{M, N, 32});
    return std::pair<int, int>{t.bm, t.bn};
  };
  using P = std::pair<int, int>;
  CHECK(pick(8192, 64) == P{128, 64});
  CHECK(pick(8192, 8) == P{128, 64});
  CHECK(pick(8192, 72) == P{128, 128});
  CHECK(pick(64, 576) == P{64, 128});
  CHECK(pick(8, 2048) == P{64, 128});
  CHECK(pick(65, 576) == P{128, 128});
  CHECK(pick(64, 64) == P{128, 64});  // both small: the N rule wins
  CHECK(pick(1, 1) == P{128, 64});
  CHECK(pick(4096, 4096) == P{128, 128});
  // Every configuration is chosen by some pass of seresnet152d (batch 2,
  // 64x64 input: the GPU tests' shapes), so the GPU tests run all three.
  std::map<P, int> used;
  for (const Conv2dGeom& g : resnet_conv_shapes(resnet_config("seresnet152d"), 2, 64))
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      if (!v2_geometry_ok(p, g)) continue;
      const V2TileShape t = v2_pick_tile(gemm_dims(p, igemm_of(g)));
      ++used[{t.bm, t.bn}];
    }
  CHECK(used.size() == 3u);
  CHECK(used[P{128, 128}] > 0);
  CHECK(used[P{128, 64}] > 0);
  CHECK(used[P{64, 128}] > 0);
}
