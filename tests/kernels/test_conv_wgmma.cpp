// The layout, descriptor and fragment logic of the Hopper native convolution
// v3 (kernels/common/conv_wgmma.h), proven on the CPU:
//   - the 128-byte swizzle equals the PTX ISA's pattern table (16-byte chunk c
//     of 128-byte row r within a 1024-byte atom lands at chunk c ^ (r % 8)),
//     is a bijection, and the loaders' cp.async stores are bank-conflict free;
//   - the matrix descriptors hold the fields where the ISA's "Matrix
//     Descriptor Format" puts them (hand-computed words) and decode back;
//   - a CPU emulation of the whole kernel data flow (loaders filling a
//     NaN-initialized shared-memory ring through the header's offsets, TMA
//     boxes written with the ISA's swizzle, wgmma reading A and B through the
//     ISA's canonical 128B-swizzle layouts of its descriptors, the ISA's
//     m64nNk16 D fragment, the kernel's wait counts with copies landing as
//     early or as late as allowed and wgmma reading as late as allowed, and
//     the epilogue storing through v3_acc_coord) gives Fwd, Dgrad and Wgrad
//     equal to conv2d_*_cpu in double (small integer inputs: exact), the Fwd
//     epilogue (affine, ReLU) bit for bit, and the per-M-tile statistics
//     partials equal to direct sums, each written exactly once.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "kernels/common/bf16.h"
#include "kernels/common/conv_epilogue.h"
#include "kernels/common/conv_igemm.h"
#include "kernels/common/conv_wgmma.h"
#include "kernels/cpu/conv2d.h"

using namespace rz;
using namespace rz::igemm;

namespace {

// The PTX ISA's 128-byte swizzle figure: row r (of 128 bytes, r = address
// bits 7-9) stores logical 16-byte chunk c at position kSw128[r][c].
constexpr int kSw128[8][8] = {
    {0, 1, 2, 3, 4, 5, 6, 7}, {1, 0, 3, 2, 5, 4, 7, 6}, {2, 3, 0, 1, 6, 7, 4, 5},
    {3, 2, 1, 0, 7, 6, 5, 4}, {4, 5, 6, 7, 0, 1, 2, 3}, {5, 4, 7, 6, 1, 0, 3, 2},
    {6, 7, 4, 5, 2, 3, 0, 1}, {7, 6, 5, 4, 3, 2, 1, 0},
};

// Physical byte of logical byte `addr` under the ISA table (base 1024-aligned).
uint32_t isa_swizzle(uint32_t addr) {
  const uint32_t row = (addr >> 7) & 7, chunk = (addr >> 4) & 7;
  return (addr & ~0x7Fu) | (static_cast<uint32_t>(kSw128[row][chunk]) << 4) | (addr & 15u);
}

struct ConvCase {
  int64_t N, H, W, C, K, R, S, sh, sw, ph, pw;
};

// C, K multiples of 8 but not of 64; M, N, K not multiples of the tiles.
const ConvCase kShapes[] = {
    {2, 9, 7, 16, 24, 3, 3, 1, 1, 1, 1},     // 3x3 s1 p1
    {2, 11, 13, 8, 40, 3, 3, 2, 2, 1, 1},    // 3x3 s2 p1: Dgrad M = 286 (3 tiles)
    {3, 10, 10, 24, 136, 1, 1, 2, 2, 0, 0},  // 1x1 s2: two N tiles (Fwd), two M tiles (Wgrad)
    {1, 7, 9, 136, 8, 3, 3, 1, 1, 1, 1},     // C = 136: 20 k-tiles (Fwd), two N tiles (Dgrad)
    {2, 8, 9, 16, 24, 3, 3, 2, 2, 0, 0},     // stride 2 without padding
    {2, 12, 11, 40, 48, 1, 1, 1, 1, 0, 0},   // 1x1 s1: M = 264
};

Conv2dGeom geom_of(const ConvCase& s) {
  return make_conv2d_geom(s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
}

std::vector<double> random_ints(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-3, 3);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}

uint16_t bf16_bits(double v) {
  return f32_to_bf16(static_cast<float>(v)).bits;
}
double bits_value(uint16_t b) {
  return bf16_to_f32(bf16{b});
}

// ---------------------------------------------------------------------------
// wgmma as the ISA describes it, independent of conv_wgmma.h.

// Element (mn, k) of a wgmma operand (mn < 64 for A, < 128 for B; k < 16)
// from its descriptor: the canonical 128B-swizzle layouts (T = 8 bf16)
//   K-major  ((8,m),(T,2k)):((8T,SBO),(1,T))
//   MN-major ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))
// then Swizzle<3,4,3> on the byte address.
double isa_operand(const std::vector<uint16_t>& smem, uint64_t desc, bool mn_major, int mn, int k) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) * 16;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) * 16;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) * 16;
  REQUIRE(((desc >> 49) & 7) == 0);  // base offset: tiles are 1024-aligned
  REQUIRE((desc >> 62) == 1);        // 128-byte swizzle
  uint32_t addr;
  if (!mn_major) {
    addr = start + static_cast<uint32_t>(mn % 8) * 128 + static_cast<uint32_t>(mn / 8) * sbo +
           static_cast<uint32_t>(k) * 2;
  } else {
    addr = start + static_cast<uint32_t>(mn % 64) * 2 + static_cast<uint32_t>(mn / 64) * lbo +
           static_cast<uint32_t>(k % 8) * 128 + static_cast<uint32_t>(k / 8) * sbo;
  }
  const uint32_t phys = isa_swizzle(addr);
  REQUIRE((phys % 2 == 0 && phys / 2 < smem.size()));
  return bits_value(smem[phys / 2]);
}

// One warpgroup's wgmma.m64n128k16: acc[thread][reg] += A(64x16) * B(16x128),
// D distributed as the ISA's figure: warp w holds rows 16w .. 16w+15; for the
// j-th block of 8 columns, lane l holds {d[4j], d[4j+1]} = row l/4, columns
// 2(l%4), 2(l%4)+1 and {d[4j+2], d[4j+3]} = row l/4 + 8, same columns.
void isa_wgmma(const std::vector<uint16_t>& smem, uint64_t da, uint64_t db, bool ta, bool tb,
               std::vector<double>& acc /* [128 threads][64] */) {
  double A[64][16], B[16][128];
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) A[m][k] = isa_operand(smem, da, ta, m, k);
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < 16; ++k) B[k][n] = isa_operand(smem, db, tb, n, k);
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, l = t % 32;
    for (int j = 0; j < 16; ++j)
      for (int half = 0; half < 2; ++half)
        for (int e = 0; e < 2; ++e) {
          const int row = 16 * w + l / 4 + 8 * half, col = 8 * j + 2 * (l % 4) + e;
          double s = 0;
          for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
          acc[static_cast<size_t>(t * 64 + 4 * j + 2 * half + e)] += s;
        }
  }
}

// ---------------------------------------------------------------------------
// The kernel's block loop.

struct Copy16 {
  uint32_t dst;  // ring byte offset
  int src;       // element offset, -1: zero-fill
  bool is_a;
};
struct TmaBox {
  uint32_t dst;  // ring byte offset of the B tile
  TmaCoord c;
};

struct Result {
  std::vector<double> raw;    // fp32 accumulators (exact) per split, [splits][M][N]
  std::vector<uint16_t> y;    // stored bf16 (splits == 1)
  std::vector<int> writes;    // stores per output element
  std::vector<double> stats;  // Fwd epilogue stats, NaN = unwritten
  std::vector<int> stat_writes;
};

template <typename Loader>
struct V3Emulation {
  ConvPass p;
  const IgemmGeom& g;
  const std::vector<uint16_t>& a;
  const std::vector<uint16_t>& b;  // for Fwd: w as [K][R*S*C]
  bool copies_late;                // cp.async / TMA data lands as late as the waits allow
  bool wgmma_late;                 // wgmma reads shared memory as late as wait_group allows

  std::vector<uint16_t> smem;
  std::vector<Copy16> open;
  std::vector<std::vector<Copy16>> groups;
  std::vector<std::vector<TmaBox>> tma_pending;  // per stage
  struct Batch {
    int stage;
  };
  std::vector<Batch> batches;
  std::vector<double> acc;  // [2 warpgroups][128 threads][64]

  void apply(const Copy16& c) {
    const std::vector<uint16_t>& src = c.is_a ? a : b;
    REQUIRE((c.dst % 16 == 0 && c.dst + 16 <= smem.size() * 2));
    if (c.src >= 0) REQUIRE((c.src % 8 == 0 && c.src + 8 <= static_cast<int>(src.size())));
    for (int e = 0; e < 8; ++e)
      smem[c.dst / 2 + static_cast<uint32_t>(e)] =
          c.src < 0 ? uint16_t{0} : src[static_cast<size_t>(c.src + e)];
  }
  void apply_tma(const TmaBox& t) {
    const int rsc = g.R * g.S * g.C;
    for (int r = 0; r < kV3BN; ++r)
      for (int kk = 0; kk < kV3BK; ++kk) {
        const int n = t.c.n0 + r, k = t.c.k0 + kk;
        const uint16_t v = (n < g.K && k < rsc) ? b[static_cast<size_t>(n * rsc + k)] : uint16_t{0};
        smem[(t.dst + isa_swizzle(static_cast<uint32_t>(r * 128 + kk * 2))) / 2] = v;
      }
  }
  void wait_copies(size_t pending) {
    while (groups.size() > pending) {
      for (const Copy16& c : groups.front()) apply(c);
      groups.erase(groups.begin());
    }
  }
  void run_batch(const Batch& bt) {
    const uint32_t sa = static_cast<uint32_t>(bt.stage * kV3StageBytes);
    const uint32_t sb = sa + kV3TileBytes;
    for (int wg = 0; wg < kV3WarpGroups; ++wg) {
      std::vector<double> part(128 * 64, 0.0);
      for (int ks = 0; ks < kV3KSteps; ++ks)
        isa_wgmma(smem, v3_a_desc(p, sa, wg, ks), v3_b_desc(p, sb, ks), v3_a_mnmajor(p),
                  v3_b_mnmajor(p), part);
      for (size_t i = 0; i < part.size(); ++i)
        acc[static_cast<size_t>(wg) * part.size() + i] += part[i];
    }
  }
  void wait_wgmma(size_t pending) {
    while (batches.size() > pending) {
      run_batch(batches.front());
      batches.erase(batches.begin());
    }
  }

  void run_block(int bx, int by, int bz, int k_tiles, int splits, const ConvFwdEpilogue* ep,
                 Result& res) {
    const GemmDims d = gemm_dims(p, g);
    const int bm0 = bx * kV3BM, bn0 = by * kV3BN;
    const KRange kr = split_k_range(k_tiles, splits, bz);
    const int nk = kr.end - kr.begin;
    smem.assign(kV3RingBytes / 2, uint16_t{0x7fc1});  // NaN
    groups.clear();
    open.clear();
    batches.clear();
    tma_pending.assign(kV3Stages, {});
    acc.assign(static_cast<size_t>(kV3Threads) * 64, 0.0);
    std::vector<Loader> ld(kV3Threads);
    for (int tid = 0; tid < kV3Threads; ++tid)
      ld[static_cast<size_t>(tid)].init(g, tid, bm0, bn0, kr.begin);
    auto load_tile = [&](int t) {
      const int stage = t % kV3Stages;
      const uint32_t sa = static_cast<uint32_t>(stage * kV3StageBytes), sb = sa + kV3TileBytes;
      for (int tid = 0; tid < kV3Threads; ++tid) {
        V3Chunk ca[kV3ChunksPerThread], cb[kV3ChunksPerThread];
        Loader& l = ld[static_cast<size_t>(tid)];
        l.chunks(g, tid, ca, cb);
        for (int i = 0; i < kV3ChunksPerThread; ++i) {
          REQUIRE(ca[i].smem < static_cast<uint32_t>(kV3TileBytes));
          const Copy16 c{sa + ca[i].smem, ca[i].src, true};
          if (copies_late)
            open.push_back(c);
          else
            apply(c);
          if (Loader::kLoadsB) {
            REQUIRE(cb[i].smem < static_cast<uint32_t>(kV3TileBytes));
            const Copy16 cbb{sb + cb[i].smem, cb[i].src, false};
            if (copies_late)
              open.push_back(cbb);
            else
              apply(cbb);
          }
        }
        if (!Loader::kLoadsB && tid == 0) {
          REQUIRE(tma_pending[static_cast<size_t>(stage)].empty());  // one box per phase
          const TmaBox box{sb, v3_tma_b_coord(bn0, kr.begin + t)};
          if (copies_late)
            tma_pending[static_cast<size_t>(stage)].push_back(box);
          else
            apply_tma(box);
        }
        l.advance(g);
      }
    };
    auto commit = [&] {
      groups.push_back(open);
      open.clear();
    };

    for (int t = 0; t < kV3Prefetch; ++t) {
      if (t < nk) load_tile(t);
      commit();
    }
    for (int i = 0; i < nk; ++i) {
      const int stage = i % kV3Stages;
      wait_copies(kV3CpAsyncPending);
      for (const TmaBox& box : tma_pending[static_cast<size_t>(stage)]) apply_tma(box);
      tma_pending[static_cast<size_t>(stage)].clear();
      batches.push_back({stage});
      if (!wgmma_late) wait_wgmma(0);
      const int next = i + kV3Prefetch;
      if (next < nk) load_tile(next);
      commit();
      wait_wgmma(1);
    }
    wait_wgmma(0);
    wait_copies(0);

    // Epilogue through the header's fragment mapping.
    const size_t mn = static_cast<size_t>(d.M) * static_cast<size_t>(d.N);
    std::vector<float> red(static_cast<size_t>(8 * 2 * kV3BN), std::nanf(""));
    float ssum[kV3Threads][kV3AccRegs / 2], ssq[kV3Threads][kV3AccRegs / 2];
    for (int tid = 0; tid < kV3Threads; ++tid) {
      const int wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
      for (int j = 0; j < kV3AccRegs / 2; ++j) ssum[tid][j] = ssq[tid][j] = 0.f;
      for (int reg = 0; reg < kV3AccRegs; reg += 2) {
        const TileRC rc = v3_acc_coord(wg, wq, lane, reg);
        REQUIRE((rc.row >= 0 && rc.row < kV3BM && rc.col >= 0 && rc.col + 1 < kV3BN));
        const int m = bm0 + rc.row, n = bn0 + rc.col;
        if (m >= d.M || n >= d.N) continue;
        REQUIRE(n % 2 == 0);
        REQUIRE(n + 1 < d.N);
        for (int e = 0; e < 2; ++e) {
          const double v = acc[static_cast<size_t>(tid * 64 + reg + e)];
          const size_t off = static_cast<size_t>(c_offset(d, m, n + e));
          res.raw[static_cast<size_t>(bz) * mn + off] = v;
          res.writes[static_cast<size_t>(bz) * mn + off] += 1;
          if (splits == 1) {
            float f = static_cast<float>(v);
            if (ep != nullptr) f = conv_epilogue_value(f, ep->scale, ep->shift, ep->relu, n + e);
            const bf16 h = f32_to_bf16(f);
            res.y[off] = h.bits;
            const float r = bf16_to_f32(h);
            const int slot = (reg >> 2) * 2 + e;
            ssum[tid][slot] += r;
            ssq[tid][slot] += r * r;
          }
        }
      }
    }
    if (ep == nullptr || ep->stats == nullptr) return;
    // The kernel's reduction: xor-shuffles over lane bits 2-4, lanes 0-3
    // write the per-warp partials, then the 8 warps are added in order.
    for (int warp = 0; warp < 8; ++warp)
      for (int off = 4; off < 32; off <<= 1) {
        float ns[32][kV3AccRegs / 2], nq[32][kV3AccRegs / 2];
        for (int l = 0; l < 32; ++l)
          for (int j = 0; j < kV3AccRegs / 2; ++j) {
            ns[l][j] = ssum[warp * 32 + l][j] + ssum[warp * 32 + (l ^ off)][j];
            nq[l][j] = ssq[warp * 32 + l][j] + ssq[warp * 32 + (l ^ off)][j];
          }
        for (int l = 0; l < 32; ++l)
          for (int j = 0; j < kV3AccRegs / 2; ++j) {
            ssum[warp * 32 + l][j] = ns[l][j];
            ssq[warp * 32 + l][j] = nq[l][j];
          }
      }
    std::vector<int> red_writes(red.size(), 0);
    for (int tid = 0; tid < kV3Threads; ++tid) {
      const int warp = tid / 32, lane = tid % 32;
      if (lane >= 4) continue;
      for (int j = 0; j < kV3AccRegs / 2; ++j) {
        const int col = v3_acc_coord(warp / 4, warp % 4, lane, 2 * (j & ~1) + (j & 1)).col;
        red[static_cast<size_t>(v3_stats_slot(warp, 0, col))] = ssum[tid][j];
        red[static_cast<size_t>(v3_stats_slot(warp, 1, col))] = ssq[tid][j];
        red_writes[static_cast<size_t>(v3_stats_slot(warp, 0, col))] += 1;
        red_writes[static_cast<size_t>(v3_stats_slot(warp, 1, col))] += 1;
      }
    }
    for (int w : red_writes) REQUIRE(w == 1);
    REQUIRE(static_cast<size_t>(v3_stats_slot(7, 1, kV3BN - 1)) * 4 < kV3RingBytes);
    for (int tid = 0; tid < kV3BN; ++tid) {
      if (bn0 + tid >= d.N) continue;
      float s = 0.f, q = 0.f;
      for (int w = 0; w < 8; ++w) {
        s += red[static_cast<size_t>(v3_stats_slot(w, 0, tid))];
        q += red[static_cast<size_t>(v3_stats_slot(w, 1, tid))];
      }
      const size_t i0 = static_cast<size_t>((bx * 2 + 0) * d.N + bn0 + tid);
      const size_t i1 = static_cast<size_t>((bx * 2 + 1) * d.N + bn0 + tid);
      res.stats[i0] = s;
      res.stats[i1] = q;
      res.stat_writes[i0] += 1;
      res.stat_writes[i1] += 1;
    }
  }
};

template <typename Loader>
Result emulate(ConvPass p, const IgemmGeom& g, const std::vector<double>& a,
               const std::vector<double>& b, int splits, bool copies_late, bool wgmma_late,
               const ConvFwdEpilogue* ep) {
  std::vector<uint16_t> a16(a.size()), b16(b.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = bf16_bits(a[i]);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = bf16_bits(b[i]);
  const GemmDims d = gemm_dims(p, g);
  const int mt = (d.M + kV3BM - 1) / kV3BM, nt = (d.N + kV3BN - 1) / kV3BN;
  const int k_tiles = (d.K + kV3BK - 1) / kV3BK;
  const size_t mn = static_cast<size_t>(d.M) * static_cast<size_t>(d.N);
  Result res;
  res.raw.assign(mn * static_cast<size_t>(splits), std::nan(""));
  res.y.assign(mn, uint16_t{0x7fc1});
  res.writes.assign(mn * static_cast<size_t>(splits), 0);
  res.stats.assign(static_cast<size_t>(mt) * 2 * static_cast<size_t>(d.N), std::nan(""));
  res.stat_writes.assign(res.stats.size(), 0);
  V3Emulation<Loader> emu{p, g, a16, b16, copies_late, wgmma_late, {}, {}, {}, {}, {}, {}};
  for (int bz = 0; bz < splits; ++bz)
    for (int bx = 0; bx < mt; ++bx)
      for (int by = 0; by < nt; ++by) emu.run_block(bx, by, bz, k_tiles, splits, ep, res);
  return res;
}

Result emulate_pass(ConvPass p, const IgemmGeom& g, const std::vector<double>& a,
                    const std::vector<double>& b, int splits, bool copies_late, bool wgmma_late,
                    const ConvFwdEpilogue* ep = nullptr) {
  if (p == ConvPass::Fwd)
    return emulate<V3FwdLoader>(p, g, a, b, splits, copies_late, wgmma_late, ep);
  if (p == ConvPass::Dgrad)
    return emulate<V3DgradLoader>(p, g, a, b, splits, copies_late, wgmma_late, ep);
  return emulate<V3WgradLoader>(p, g, a, b, splits, copies_late, wgmma_late, ep);
}

struct Tensors {
  std::vector<double> x, w, dy;
};

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

const char* pass_name(ConvPass p) {
  return p == ConvPass::Fwd ? "fwd" : (p == ConvPass::Dgrad ? "dgrad" : "wgrad");
}

}  // namespace

TEST_CASE("conv wgmma: the 128-byte swizzle is the ISA pattern, a bijection, conflict free") {
  std::set<uint32_t> seen;
  for (uint32_t off = 0; off < static_cast<uint32_t>(kV3TileBytes); off += 16) {
    const uint32_t s = v3_sw128(off);
    CHECK(s == isa_swizzle(off));
    CHECK(s / 1024 == off / 1024);              // stays in its atom
    CHECK(((s >> 7) & 7) == ((off >> 7) & 7));  // and its row
    seen.insert(s);
  }
  CHECK(seen.size() == static_cast<size_t>(kV3TileBytes / 16));
  CHECK(v3_sw128(0x3A5) == 0x3D5u);  // row 7, chunk 2 -> 2 ^ 7 = 5
  CHECK(v3_sw128(1024 + 3 * 128 + 5 * 16 + 6) == 1024 + 3 * 128 + 6 * 16 + 6);  // 5 ^ 3 = 6

  // Both tile layouts: every chunk of a 16 KiB tile exactly once, and each
  // quarter-warp's 16-byte stores (one 128-byte shared-memory wavefront) hit
  // 8 distinct bank groups.
  for (bool mn : {false, true}) {
    std::set<uint32_t> slots;
    for (int i = 0; i < kV3ChunksPerThread; ++i)
      for (int q = 0; q < kV3Threads / 8; ++q) {
        std::set<uint32_t> banks;
        for (int t = 8 * q; t < 8 * q + 8; ++t) {
          const ChunkCoord cc = v3_chunk_coord(mn, t, i);
          const uint32_t off = v3_chunk_smem(mn, cc);
          CHECK(off % 16 == 0);
          CHECK(off < static_cast<uint32_t>(kV3TileBytes));
          slots.insert(off);
          banks.insert((off / 16) % 8);
        }
        CHECK(banks.size() == 8);
      }
    CHECK(slots.size() == static_cast<size_t>(kV3TileBytes / 16));
  }
}

TEST_CASE("conv wgmma: descriptors put the fields where the ISA says") {
  // Fwd A (K-major), warpgroup 1, k-step 2, tile at 0x2000: start 0x2000 +
  // 64*128 + 2*32 = 0x4040 -> 0x404 (bits 0-13), LBO 16 -> 1 (bits 16-29),
  // SBO 1024 -> 0x40 (bits 32-45), 128B swizzle 1 (bits 62-63).
  CHECK(v3_a_desc(ConvPass::Fwd, 0x2000, 1, 2) == 0x4000004000010404ull);
  // Fwd B (K-major), k-step 3, tile at 0x6000: start 0x6060 -> 0x606.
  CHECK(v3_b_desc(ConvPass::Fwd, 0x6000, 3) == 0x4000004000010606ull);
  // Dgrad B (MN-major), k-step 3, tile at 0x6000: start 0x6000 + 3*2048 =
  // 0x7800 -> 0x780, LBO 8192 -> 0x200, SBO 1024 -> 0x40.
  CHECK(v3_b_desc(ConvPass::Dgrad, 0x6000, 3) == 0x4000004002000780ull);
  // Wgrad A (MN-major), warpgroup 1, k-step 1, tile at 0x8000: start 0x8000 +
  // 8192 + 2048 = 0xA800 -> 0xA80.
  CHECK(v3_a_desc(ConvPass::Wgrad, 0x8000, 1, 1) == 0x4000004002000A80ull);
  // The ISA's own example (MN-major, 64B swizzle, bf16): LBO = 256 bf16 ->
  // encoded 32, SBO = 512 bf16 -> encoded 64, swizzle mode 2.
  WgmmaDesc ex;
  ex.lbo = 512;
  ex.sbo = 1024;
  ex.swizzle = 2;
  CHECK(v3_desc_encode(ex) == ((uint64_t{32} << 16) | (uint64_t{64} << 32) | (uint64_t{2} << 62)));
  // Field widths: a full start field, a base offset, nothing leaking.
  WgmmaDesc full;
  full.start = 0x3FFF0;
  full.base_offset = 5;
  CHECK(v3_desc_encode(full) == (uint64_t{0x3FFF} | (uint64_t{5} << 49)));
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> f14(0, 0x3FFF), f3(0, 7), f2(0, 3);
  for (int i = 0; i < 1000; ++i) {
    WgmmaDesc d;
    d.start = f14(rng) << 4;
    d.lbo = f14(rng) << 4;
    d.sbo = f14(rng) << 4;
    d.base_offset = f3(rng);
    d.swizzle = f2(rng);
    const WgmmaDesc r = v3_desc_decode(v3_desc_encode(d));
    CHECK((r.start == d.start && r.lbo == d.lbo && r.sbo == d.sbo &&
           r.base_offset == d.base_offset && r.swizzle == d.swizzle));
  }
  // Every tile the kernel addresses is 1024-aligned in the ring.
  CHECK(kV3StageBytes % 1024 == 0);
  CHECK(kV3TileBytes % 1024 == 0);
}

TEST_CASE("conv wgmma: kernel emulation computes fwd, dgrad and wgrad exactly") {
  std::mt19937 rng(11);
  int runs = 0;
  for (const ConvCase& s : kShapes) {
    const Conv2dGeom g = geom_of(s);
    IgemmGeom ig;
    REQUIRE(make_igemm_geom(g, &ig));
    const Tensors t{random_ints(g.N * g.H * g.W * g.C, rng),
                    random_ints(g.K * g.R * g.S * g.C, rng),
                    random_ints(g.N * g.OH * g.OW * g.K, rng)};
    for (ConvPass p : {ConvPass::Fwd, ConvPass::Dgrad, ConvPass::Wgrad}) {
      CAPTURE(pass_name(p));
      CAPTURE(s.C);
      CAPTURE(s.K);
      CAPTURE(s.H);
      REQUIRE(v3_geometry_ok(p, g));
      const std::vector<double> ref = reference(p, g, t);
      const std::vector<double>& a = p == ConvPass::Fwd ? t.x : t.dy;
      const std::vector<double>& b = p == ConvPass::Wgrad ? t.x : t.w;
      const GemmDims d = gemm_dims(p, ig);
      const int k_tiles = (d.K + kV3BK - 1) / kV3BK;
      for (int mode = 0; mode < 2; ++mode) {
        const bool copies_late = mode == 0, wgmma_late = mode == 1;
        CAPTURE(mode);
        const int splits = (p == ConvPass::Wgrad && mode == 1 && k_tiles >= 2) ? 2 : 1;
        const Result r = emulate_pass(p, ig, a, b, splits, copies_late, wgmma_late);
        const size_t mn = ref.size();
        REQUIRE(r.raw.size() == mn * static_cast<size_t>(splits));
        bool exact = true, once = true, stored = true;
        for (size_t i = 0; i < mn; ++i) {
          double sum = 0;
          for (int z = 0; z < splits; ++z) {
            sum += r.raw[static_cast<size_t>(z) * mn + i];
            once = once && r.writes[static_cast<size_t>(z) * mn + i] == 1;
          }
          exact = exact && sum == ref[i];
          if (splits == 1) stored = stored && r.y[i] == bf16_bits(ref[i]);
        }
        CHECK(once);
        CHECK(exact);
        CHECK(stored);
        ++runs;
      }
    }
  }
  CHECK(runs == 2 * 3 * static_cast<int>(std::size(kShapes)));
}

TEST_CASE("conv wgmma: fwd epilogue (affine, relu) and per-M-tile statistics") {
  std::mt19937 rng(12);
  for (int ci : {0, 2, 5}) {
    const ConvCase& s = kShapes[ci];
    const Conv2dGeom g = geom_of(s);
    IgemmGeom ig;
    REQUIRE(make_igemm_geom(g, &ig));
    const Tensors t{
        random_ints(g.N * g.H * g.W * g.C, rng), random_ints(g.K * g.R * g.S * g.C, rng), {}};
    const std::vector<double> ref = reference(ConvPass::Fwd, g, t);
    std::vector<float> scale(static_cast<size_t>(g.K)), shift(static_cast<size_t>(g.K));
    std::uniform_int_distribution<int> pick(0, 3), sh(-4, 4);
    const float scales[] = {0.5f, 1.f, 2.f, -1.f};
    for (size_t k = 0; k < scale.size(); ++k) {
      scale[k] = scales[pick(rng)];
      shift[k] = static_cast<float>(sh(rng));
    }
    const GemmDims d = gemm_dims(ConvPass::Fwd, ig);
    const int mt = (d.M + kV3BM - 1) / kV3BM;
    std::vector<float> stats_buf(static_cast<size_t>(mt) * 2 * static_cast<size_t>(d.N));
    for (int variant = 0; variant < 2; ++variant) {
      CAPTURE(ci);
      CAPTURE(variant);
      ConvFwdEpilogue ep;
      if (variant == 0) {
        ep.scale = scale.data();
        ep.shift = shift.data();
        ep.relu = true;
      }
      ep.stats = stats_buf.data();  // only non-null matters to the emulation
      const Result r = emulate_pass(ConvPass::Fwd, ig, t.x, t.w, 1, true, false, &ep);
      bool stored = true;
      for (size_t i = 0; i < ref.size(); ++i) {
        const int k = static_cast<int>(i % static_cast<size_t>(d.N));
        const float v =
            conv_epilogue_value(static_cast<float>(ref[i]), ep.scale, ep.shift, ep.relu, k);
        stored = stored && r.y[i] == f32_to_bf16(v).bits;
      }
      CHECK(stored);
      bool once = true, close = true;
      for (int tile = 0; tile < mt; ++tile)
        for (int k = 0; k < d.N; ++k) {
          double s1 = 0, s2 = 0;
          for (int m = tile * kV3BM; m < std::min(d.M, (tile + 1) * kV3BM); ++m) {
            const double y = bits_value(
                r.y[static_cast<size_t>(m) * static_cast<size_t>(d.N) + static_cast<size_t>(k)]);
            s1 += y;
            s2 += y * y;
          }
          const size_t i0 = static_cast<size_t>((tile * 2 + 0) * d.N + k);
          const size_t i1 = static_cast<size_t>((tile * 2 + 1) * d.N + k);
          once = once && r.stat_writes[i0] == 1 && r.stat_writes[i1] == 1;
          close = close && std::fabs(r.stats[i0] - s1) <= 1e-6 * (1 + std::fabs(s1)) &&
                  std::fabs(r.stats[i1] - s2) <= 1e-6 * (1 + s2);
        }
      CHECK(once);
      CHECK(close);
    }
  }
}
