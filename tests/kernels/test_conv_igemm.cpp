// The index logic of the native implicit-GEMM convolutions
// (kernels/common/conv_igemm.h), proven on the CPU:
//   - FastDivmod against / and %, tap advance against a fresh split, split-K
//     ranges partition the k-tiles;
//   - the gathers a block performs, walked tile by tile with the kernels' own
//     functions (v1 per element, v2 per 16-byte chunk of its loaders), equal
//     an explicit im2col (im2col_cpu) and, for Dgrad, a naive transposed
//     gather written here; every in-range element is visited exactly once;
//   - CPU emulations of the v1 and v2 kernels (same tiles, stages, k-steps,
//     chunk predicates, swizzled shared memory; ldmatrix and mma.m16n8k16
//     emulated from the PTX fragment layouts; cp.async completing either at
//     issue or as late as wait_group allows) give Fwd, Dgrad and Wgrad equal to
//     conv2d_*_cpu in double. Inputs are small integers, so every sum is exact
//     in fp32 and results must match bit for bit;
//   - v2 in each of its block-tile configurations (128x128, 128x64, 64x128),
//     whatever the selection rule would pick: loaders, emulation, the Fwd
//     statistics epilogue (per-M-tile partials of the configuration's BM),
//     and the selection rule itself;
//   - the swizzled layouts are bijections onto 16-byte aligned chunks, and
//     every ldmatrix phase and cp.async store is bank-conflict free;
//   - models/conv_shapes lists exactly the convolutions seresnet152d declares.
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

using namespace rz;
using namespace rz::igemm;

namespace {

struct ConvCase {
  int64_t N, H, W, C, K, R, S, sh, sw, ph, pw;
};

Conv2dGeom geom_of(const ConvCase& s) {
  return make_conv2d_geom(s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
}

IgemmGeom igemm_of(const Conv2dGeom& g) {
  IgemmGeom ig;
  REQUIRE(make_igemm_geom(g, &ig));
  return ig;
}

// Any geometry (v1): odd sizes, C not a multiple of 8, stride 2, padding,
// 1x1 / 3x3 / 7x7, several tiles along M, N and K.
const ConvCase kAnyShapes[] = {
    {2, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1},     // 3x3 s1 p1, odd everything
    {2, 11, 13, 7, 9, 3, 3, 2, 2, 1, 1},   // 3x3 s2 p1
    {1, 23, 19, 3, 8, 7, 7, 2, 2, 3, 3},   // 7x7 s2 p3, C = 3 (a stem)
    {3, 10, 10, 9, 4, 1, 1, 2, 2, 0, 0},   // 1x1 s2 (strided shortcut)
    {2, 12, 10, 9, 70, 3, 3, 1, 1, 1, 1},  // M = 240, N = 70: several tiles
    {1, 5, 5, 1, 1, 3, 3, 1, 1, 0, 0},     // one channel in and out, no padding
    {2, 8, 9, 3, 5, 3, 3, 2, 2, 0, 0},     // stride 2 without padding (dropped edge)
    {1, 6, 6, 13, 67, 3, 1, 2, 1, 1, 0},   // non-square kernel and stride
};

// v2 geometries (C % 8 == 0, K % 8 == 0): odd spatial sizes, stride 2,
// 1x1 / 3x3 / 7x7, M and N past one 128 tile or short of one 64 tile,
// reductions past one k-tile. Every configuration runs every shape.
const ConvCase kVecShapes[] = {
    {2, 9, 7, 16, 24, 3, 3, 1, 1, 1, 1},      // 3x3 s1 p1
    {2, 11, 13, 8, 16, 3, 3, 2, 2, 1, 1},     // 3x3 s2 p1, C = 8
    {1, 13, 11, 8, 136, 7, 7, 2, 2, 3, 3},    // 7x7 s2 p3, two N tiles (Fwd)
    {3, 10, 10, 32, 8, 1, 1, 2, 2, 0, 0},     // 1x1 s2
    {2, 12, 12, 40, 48, 1, 1, 1, 1, 0, 0},    // 1x1 s1: M = 288, three M tiles
    {1, 7, 7, 136, 8, 3, 3, 1, 1, 1, 1},      // C = 136: two N tiles in Dgrad
    {2, 6, 7, 16, 16, 3, 3, 2, 2, 0, 0},      // stride 2 without padding
    {2, 1, 1, 64, 8, 1, 1, 1, 1, 0, 0},       // an SE fc on a 1x1 map
    {1, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1},    // seresnet152d layer1 conv2 (at 64x64 input)
    {1, 16, 16, 128, 128, 3, 3, 2, 2, 1, 1},  // seresnet152d layer2.0 conv2 (stride 2)
    {1, 8, 8, 256, 64, 1, 1, 1, 1, 0, 0},     // a bottleneck conv1
    {1, 7, 7, 72, 200, 3, 3, 2, 2, 1, 1},     // Fwd M = 16 <= 64 < N = 200 (64 x 128 tiles)
};

// Small integers: every product and sum of the test sizes is exact in fp32.
std::vector<double> random_ints(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-3, 3);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}

struct Tensors {
  std::vector<double> x, w, dy;
};

Tensors random_tensors(const Conv2dGeom& g, std::mt19937& rng) {
  return {random_ints(g.N * g.H * g.W * g.C, rng), random_ints(g.K * g.R * g.S * g.C, rng),
          random_ints(g.N * g.OH * g.OW * g.K, rng)};
}

// The pass's reference output from the CPU twins, and its A and B tensors.
std::vector<double> reference(ConvPass p, const Conv2dGeom& g, const Tensors& t) {
  std::vector<double> out;
  if (p == ConvPass::Fwd) {
    out.resize(static_cast<size_t>(g.N * g.OH * g.OW * g.K));
    conv2d_fwd_cpu(t.x.data(), t.w.data(), out.data(), g);
  } else if (p == ConvPass::Dgrad) {
    out.resize(t.x.size());
    conv2d_bwd_data_cpu(t.dy.data(), t.w.data(), out.data(), g);
  } else {
    out.resize(t.w.size());
    conv2d_bwd_weight_cpu(t.x.data(), t.dy.data(), out.data(), g);
  }
  return out;
}
const std::vector<double>& a_tensor(ConvPass p, const Tensors& t) {
  return p == ConvPass::Fwd ? t.x : t.dy;
}
const std::vector<double>& b_tensor(ConvPass p, const Tensors& t) {
  return p == ConvPass::Wgrad ? t.x : t.w;
}

std::vector<double> im2col(const Conv2dGeom& g, const std::vector<double>& x) {
  std::vector<double> col(static_cast<size_t>(g.rows() * g.taps()));
  im2col_cpu(x.data(), col.data(), g, 0, g.N);
  return col;
}

const char* pass_name(ConvPass p) {
  return p == ConvPass::Fwd ? "fwd" : (p == ConvPass::Dgrad ? "dgrad" : "wgrad");
}

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

// Dgrad's A operand written directly from its definition: the dy element that
// input pixel (n, h, w) receives through tap (r, s), or 0.
double naive_dgrad_a(const Conv2dGeom& g, const std::vector<double>& dy, int64_t m, int64_t k) {
  const int64_t w = m % g.W, h = (m / g.W) % g.H, n = m / (g.W * g.H);
  const int64_t kk = k % g.K, s = (k / g.K) % g.S, r = k / (g.K * g.S);
  for (int64_t oh = 0; oh < g.OH; ++oh)
    for (int64_t ow = 0; ow < g.OW; ++ow)
      if (oh * g.sh - g.ph + r == h && ow * g.sw - g.pw + s == w)
        return dy[static_cast<size_t>(((n * g.OH + oh) * g.OW + ow) * g.K + kk)];
  return 0.0;
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
    CAPTURE(s.N);
    CAPTURE(s.H);
    CAPTURE(s.W);
    CAPTURE(s.C);
    CAPTURE(s.K);
    CAPTURE(s.R);
    CAPTURE(s.sh);
    CAPTURE(s.ph);
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

TEST_CASE(
    "conv igemm: v2 loader chunks gather exactly im2col / the Dgrad transpose / the weights, once "
    "each, in every tile configuration") {
  std::mt19937 rng(3);
  for (const ConvCase& s : kVecShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    CAPTURE(s.N);
    CAPTURE(s.H);
    CAPTURE(s.W);
    CAPTURE(s.C);
    CAPTURE(s.K);
    CAPTURE(s.R);
    CAPTURE(s.sh);
    CAPTURE(s.ph);
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

TEST_CASE("conv igemm: v1 kernel emulation computes fwd, dgrad and wgrad exactly") {
  std::mt19937 rng(4);
  for (const ConvCase& s : kAnyShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    CAPTURE(s.N);
    CAPTURE(s.H);
    CAPTURE(s.W);
    CAPTURE(s.C);
    CAPTURE(s.K);
    CAPTURE(s.R);
    CAPTURE(s.sh);
    CAPTURE(s.ph);
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

TEST_CASE(
    "conv igemm: v2 kernel emulation (cp.async ring, ldmatrix, mma) computes all passes exactly in "
    "every tile configuration") {
  std::mt19937 rng(5);
  for (const ConvCase& s : kVecShapes) {
    const Conv2dGeom g = geom_of(s);
    const IgemmGeom ig = igemm_of(g);
    CAPTURE(s.N);
    CAPTURE(s.H);
    CAPTURE(s.W);
    CAPTURE(s.C);
    CAPTURE(s.K);
    CAPTURE(s.R);
    CAPTURE(s.sh);
    CAPTURE(s.ph);
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
    CAPTURE(s.N);
    CAPTURE(s.H);
    CAPTURE(s.W);
    CAPTURE(s.C);
    CAPTURE(s.K);
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
