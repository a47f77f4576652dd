// Index, layout and descriptor logic of the Hopper native convolution v3
// (kernels/cuda/conv_native_v3.cu: wgmma from shared memory, TMA for the
// dense Fwd weight operand), shared with the CPU emulation in
// tests/kernels/test_conv_wgmma.cpp. The GEMM meaning of each pass and the
// gathers are those of kernels/common/conv_igemm.h; this header only adds
// where an element sits in shared memory, how wgmma is told so, and which
// accumulator register holds which output.
//
// Block tile kV3BM x kV3BN x kV3BK = 128 x 128 x 64, kV3Threads = 256 threads
// = 2 warpgroups; warpgroup wg computes rows 64*wg .. 64*wg + 63 of the tile
// with wgmma.m64n128k16 (4 per k-tile), fp32 accumulators in registers.
// Every operand tile is 128 (M or N) x 64 (k) bf16 = 16 KiB, stored in the
// 128-byte swizzle mode of wgmma/TMA:
//   K-major  (k contiguous: Fwd A and B, Dgrad A): row r of M/N is 128 bytes
//            (64 k) at byte 128*r; 8-row groups are 1024 bytes apart (SBO).
//   MN-major (M/N contiguous: Dgrad B, Wgrad A and B): two 8 KiB halves of 64
//            M/N each (LBO = 8192 apart); in a half, row k is 128 bytes
//            (64 M/N) at byte 128*k; 8-k groups are 1024 bytes apart (SBO).
// The swizzle (Swizzle<3,4,3> in CuTe terms) XORs the 16-byte chunk index
// (address bits 4-6) with the row within the 1024-byte atom (bits 7-9) on the
// absolute shared address, so every tile starts 1024-byte aligned and the
// descriptors' base-offset field is 0.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/conv_igemm.h"
#include "kernels/common/hostdev.h"

namespace rz {
namespace igemm {

constexpr int kV3BM = 128, kV3BN = 128, kV3BK = 64, kV3Stages = 4, kV3Threads = 256;
constexpr int kV3WarpGroups = 2;                  // along M, 64 rows each
constexpr int kV3WgRows = kV3BM / kV3WarpGroups;  // 64 = wgmma M
constexpr int kV3KSteps = kV3BK / 16;             // wgmma k16 steps per k-tile
constexpr int kV3AccRegs = kV3BN / 2;             // m64n128 fp32: 64 registers per thread
constexpr int kV3Vec = 8;                         // bf16 per 16-byte copy
constexpr int kV3TileBytes = kV3BM * kV3BK * 2;   // 16 KiB (A tile == B tile)
constexpr int kV3StageBytes = 2 * kV3TileBytes;   // A then B
constexpr int kV3RingBytes = kV3Stages * kV3StageBytes;
constexpr int kV3SmemBytes = kV3RingBytes + 1024;  // + slack to align the ring to 1024
constexpr int kV3ChunksPerThread = kV3TileBytes / 16 / kV3Threads;  // 4 per operand
constexpr int kV3SwizzleAtomBytes = 1024;
constexpr int kV3MnHalfBytes = 64 * kV3BK * 2;  // MN-major: 64 M/N x 64 k = 8 KiB
static_assert(kV3BM == kV3BN, "both operand tiles share one layout");
static_assert(kV3BK * 2 == 128, "a K-major row is exactly one 128-byte swizzle row");
static_assert(kV3ChunksPerThread * kV3Threads * 16 == kV3TileBytes, "tiles split evenly");
static_assert(kV3Stages >= 3, "the ring keeps one tile in wgmma, one landing, one loading");
static_assert(kV3RingBytes >= 2 * 8 * kV3BN * 4, "the stats scratch fits the ring");

// v3 needs what v2 needs (16-byte vectors along every operand's contiguous
// dimension, 32-bit offsets) and a TMA-describable Fwd weight matrix
// [K][R*S*C] (row stride a multiple of 16 bytes, dims below 2^32: implied).
inline bool v3_geometry_ok(ConvPass p, const Conv2dGeom& g) {
  IgemmGeom ig;
  if (!make_igemm_geom(g, &ig)) return false;
  if (g.C % kV3Vec != 0 || g.K % kV3Vec != 0) return false;
  const GemmDims d = gemm_dims(p, ig);
  return (d.N + kV3BN - 1) / kV3BN <= 65535;
}

// GEMMs the ladder does not give v3: with M or N at most half a tile (the
// stem, layer1 and their Dgrad; Wgrad of K <= 64), every wgmma of the 128 x
// 128 tile spends at least half its work on zero-filled rows or columns, where
// v2's 128 x 64 / 64 x 128 tiles (v2_pick_tile) spend none. The raw launcher
// (detail::conv_native_v3) still runs them; conv2d_native_supported and the
// public entry points refuse them, so the call goes down to v2.
RZ_HD bool v3_declines(const GemmDims& d) {
  return d.M <= kV3BM / 2 || d.N <= kV3BN / 2;
}

// What the ladder gives v3 (conv2d_native_supported): a geometry the kernel
// runs (v3_geometry_ok) whose GEMM v3 does not decline.
inline bool v3_supported(ConvPass p, const Conv2dGeom& g) {
  IgemmGeom ig;
  if (!v3_geometry_ok(p, g) || !make_igemm_geom(g, &ig)) return false;
  return !v3_declines(gemm_dims(p, ig));
}

// Every argument of cuTensorMapEncodeTiled for the Fwd weight map that can
// differ between calls: w (on `device`) as a row-major bf16 [K][R*S*C]
// matrix, innermost dimension first, box kV3BK x kV3BN, unit element
// strides. The data type, interleave, swizzle, L2 promotion and
// out-of-range fill are constants of the launcher, which encodes from these
// fields alone: equal keys give equal maps. A map holds the address, not the
// contents, so a buffer freed and reallocated at the same address and shape
// reuses its map correctly.
struct V3WeightMapKey {
  int device = 0;
  uint64_t address = 0;
  uint64_t dims[2] = {};  // {R*S*C, K}
  uint64_t row_stride_bytes = 0;
  uint32_t box[2] = {};
  uint32_t elem_strides[2] = {};
  friend bool operator==(const V3WeightMapKey&, const V3WeightMapKey&) = default;
};

inline V3WeightMapKey v3_weight_map_key(const IgemmGeom& g, const void* w, int device) {
  V3WeightMapKey k;
  k.device = device;
  k.address = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(w));
  const uint64_t rsc = static_cast<uint64_t>(g.R) * static_cast<uint64_t>(g.S) *
                       static_cast<uint64_t>(g.C);
  k.dims[0] = rsc;
  k.dims[1] = static_cast<uint64_t>(g.K);
  k.row_stride_bytes = rsc * 2;  // bf16; a multiple of 16 bytes when C % 8 == 0
  k.box[0] = kV3BK;
  k.box[1] = kV3BN;
  k.elem_strides[0] = k.elem_strides[1] = 1;
  return k;
}

// FNV-1a over the key's fields.
struct V3WeightMapKeyHash {
  size_t operator()(const V3WeightMapKey& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) {
      for (int i = 0; i < 8; ++i, v >>= 8) h = (h ^ (v & 0xff)) * 1099511628211ull;
    };
    mix(static_cast<uint64_t>(static_cast<uint32_t>(k.device)));
    mix(k.address);
    mix(k.dims[0]);
    mix(k.dims[1]);
    mix(k.row_stride_bytes);
    mix(k.box[0] | static_cast<uint64_t>(k.box[1]) << 32);
    mix(k.elem_strides[0] | static_cast<uint64_t>(k.elem_strides[1]) << 32);
    return static_cast<size_t>(h);
  }
};

// ---------------------------------------------------------------------------
// The 128-byte swizzle on a byte offset from a 1024-aligned base: chunk
// (bits 4-6) ^= row in atom (bits 7-9).
RZ_HD uint32_t v3_sw128(uint32_t off) {
  return off ^ ((off >> 3) & 0x70u);
}

// Byte offset of 16-byte chunk kc (k = 8*kc .. 8*kc + 7) of row `row` (M or N)
// in a K-major tile.
RZ_HD uint32_t v3_kmajor_offset(int row, int kc) {
  return v3_sw128(static_cast<uint32_t>(row * 128 + kc * 16));
}
// Byte offset of chunk c (M/N = 8*c .. 8*c + 7) of row k in an MN-major tile.
RZ_HD uint32_t v3_mnmajor_offset(int k, int c) {
  return v3_sw128(static_cast<uint32_t>((c >> 3) * kV3MnHalfBytes + k * 128 + (c & 7) * 16));
}

// Which operand tiles are MN-major (as in v2): Wgrad A (dy along m), Dgrad B
// (w along c) and Wgrad B (x along c). These go to wgmma with the transpose
// immediate set (imm-trans-a / imm-trans-b = 1, allowed for bf16).
constexpr RZ_HD bool v3_a_mnmajor(ConvPass p) {
  return p == ConvPass::Wgrad;
}
constexpr RZ_HD bool v3_b_mnmajor(ConvPass p) {
  return p != ConvPass::Fwd;
}
// Fwd's B (w as a row-major [K][R*S*C] matrix) is dense: TMA loads it.
constexpr RZ_HD bool v3_b_uses_tma(ConvPass p) {
  return p == ConvPass::Fwd;
}

// ---------------------------------------------------------------------------
// wgmma shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"):
//   bits  0-13  start address >> 4        bits 16-29  leading byte offset >> 4
//   bits 32-45  stride byte offset >> 4   bits 49-51  matrix base offset
//   bits 62-63  swizzle: 0 none, 1 128B, 2 64B, 3 32B
struct WgmmaDesc {
  uint32_t start = 0, lbo = 0, sbo = 0;  // bytes (multiples of 16)
  uint32_t base_offset = 0, swizzle = 0;
};
constexpr uint32_t kV3Swizzle128B = 1;

RZ_HD uint64_t v3_desc_encode(const WgmmaDesc& d) {
  return static_cast<uint64_t>((d.start & 0x3FFFFu) >> 4) |
         (static_cast<uint64_t>((d.lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((d.sbo >> 4) & 0x3FFFu) << 32) |
         (static_cast<uint64_t>(d.base_offset & 7u) << 49) |
         (static_cast<uint64_t>(d.swizzle & 3u) << 62);
}
RZ_HD WgmmaDesc v3_desc_decode(uint64_t w) {
  WgmmaDesc d;
  d.start = static_cast<uint32_t>(w & 0x3FFFu) << 4;
  d.lbo = static_cast<uint32_t>((w >> 16) & 0x3FFFu) << 4;
  d.sbo = static_cast<uint32_t>((w >> 32) & 0x3FFFu) << 4;
  d.base_offset = static_cast<uint32_t>((w >> 49) & 7u);
  d.swizzle = static_cast<uint32_t>(w >> 62);
  return d;
}

// Descriptor of k16 step ks of an operand tile at shared address `tile`
// (1024-aligned); `rows0` is the first M/N row the wgmma reads (64*wg for A,
// 0 for B). K-major: LBO is unused with swizzling ("assumed 1": 16 bytes);
// the step moves the start 32 bytes along the 128-byte row (the hardware
// applies the swizzle to the final address). MN-major: LBO = 8192 between
// the 64-wide halves, SBO = 1024 between 8-k groups, a step is 2 groups.
RZ_HD WgmmaDesc v3_operand_desc(bool mnmajor, uint32_t tile, int rows0, int ks) {
  WgmmaDesc d;
  d.swizzle = kV3Swizzle128B;
  d.sbo = kV3SwizzleAtomBytes;
  if (!mnmajor) {
    d.start = tile + static_cast<uint32_t>(rows0 * 128 + ks * 32);
    d.lbo = 16;
  } else {
    d.start = tile + static_cast<uint32_t>((rows0 / 64) * kV3MnHalfBytes + ks * 2 * 1024);
    d.lbo = kV3MnHalfBytes;
  }
  return d;
}
RZ_HD uint64_t v3_a_desc(ConvPass p, uint32_t tile_a, int wg, int ks) {
  return v3_desc_encode(v3_operand_desc(v3_a_mnmajor(p), tile_a, wg * kV3WgRows, ks));
}
RZ_HD uint64_t v3_b_desc(ConvPass p, uint32_t tile_b, int ks) {
  return v3_desc_encode(v3_operand_desc(v3_b_mnmajor(p), tile_b, 0, ks));
}

// Accumulator ownership (wgmma m64nNk16 fp32 D fragment): register `reg`
// (0 .. N/2 - 1) of lane `lane` of warp `wq` (0..3) in warpgroup `wg` holds
// block-tile element (row, col) with
//   row = 64*wg + 16*wq + lane/4 + 8*((reg/2) % 2),
//   col = 8*(reg/4) + 2*(lane % 4) + reg % 2.
RZ_HD TileRC v3_acc_coord(int wg, int wq, int lane, int reg) {
  return {wg * kV3WgRows + wq * 16 + (lane >> 2) + 8 * ((reg >> 1) & 1),
          8 * (reg >> 2) + 2 * (lane & 3) + (reg & 1)};
}

// ---------------------------------------------------------------------------
// Loaders. Chunk i (< 4) of thread tid: id = tid + 256*i. K-major tiles:
// (row, kc) = (id / 8, id % 8), so a thread keeps one k (8 channels of one
// tap) per k-tile and rows tid/8 + 32*i. MN-major: (k, c) = (id / 16, id % 16),
// one column chunk and k rows tid/16 + 16*i.
RZ_HD ChunkCoord v3_chunk_coord(bool mnmajor, int tid, int i) {
  const int id = tid + kV3Threads * i;
  if (mnmajor) return {id >> 4, id & 15};
  return {id >> 3, id & 7};
}
RZ_HD uint32_t v3_chunk_smem(bool mnmajor, const ChunkCoord& cc) {
  return mnmajor ? v3_mnmajor_offset(cc.first, cc.second) : v3_kmajor_offset(cc.first, cc.second);
}

// One 16-byte copy: byte offset in the operand tile, element offset of the
// source in the pass's A or B tensor, -1 for zero-fill.
struct V3Chunk {
  uint32_t smem;
  int src;
};

// The TMA box of Fwd's B for k-tile kt of block column bn0: coordinates
// (inner k, outer output channel) in w viewed as [K][R*S*C]; box 64 x 128,
// 128-byte swizzle, out-of-range elements zero (the K-major tile layout).
struct TmaCoord {
  int k0, n0;
};
RZ_HD TmaCoord v3_tma_b_coord(int bn0, int kt) {
  return {kt * kV3BK, bn0};
}

// Per-thread gather state, one per pass (same contract as the v2 loaders:
// init() at k-tile kt of block (bm0, bn0), chunks() for the current k-tile,
// advance() to the next). kLoadsB false: B comes by TMA (Fwd).
struct V3FwdLoader {
  static constexpr bool kLoadsB = false;
  FwdRow row[kV3ChunksPerThread];  // A rows bm0 + tid/8 + 32*i
  Tap tap;                         // tap of k, shared by the A chunks
  int k;                           // this thread's k in the current k-tile

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int, int kt) {
    for (int i = 0; i < kV3ChunksPerThread; ++i)
      row[i] = fwd_row(g, bm0 + v3_chunk_coord(false, tid, i).first);
    k = kt * kV3BK + v3_chunk_coord(false, tid, 0).second * kV3Vec;
    tap = split_tap(k, g.div_s, g.div_c);
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V3Chunk (&a)[kV3ChunksPerThread],
                    V3Chunk (&)[kV3ChunksPerThread]) const {
    const bool kin = k < g.R * g.S * g.C;
    for (int i = 0; i < kV3ChunksPerThread; ++i)
      a[i] = {v3_chunk_smem(false, v3_chunk_coord(false, tid, i)),
              kin ? fwd_gather(g, row[i], tap) : -1};
  }
  RZ_HD void advance(const IgemmGeom& g) {
    k += kV3BK;
    advance_tap(tap, kV3BK, g.S, g.C);
  }
};

struct V3DgradLoader {
  static constexpr bool kLoadsB = true;
  DgradRow row[kV3ChunksPerThread];  // A rows bm0 + tid/8 + 32*i
  Tap atap;                          // (r, s, kk) of the A chunks' k
  int ak;
  Tap btap[kV3ChunksPerThread];  // (r, s, kk) of B rows kt*64 + tid/16 + 16*i
  int bk[kV3ChunksPerThread];
  int bn;  // B column (input channel) of this thread's B chunks

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int bn0, int kt) {
    for (int i = 0; i < kV3ChunksPerThread; ++i) {
      row[i] = dgrad_row(g, bm0 + v3_chunk_coord(false, tid, i).first);
      bk[i] = kt * kV3BK + v3_chunk_coord(true, tid, i).first;
      btap[i] = split_tap(bk[i], g.div_s, g.div_k);
    }
    ak = kt * kV3BK + v3_chunk_coord(false, tid, 0).second * kV3Vec;
    atap = split_tap(ak, g.div_s, g.div_k);
    bn = bn0 + v3_chunk_coord(true, tid, 0).second * kV3Vec;
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V3Chunk (&a)[kV3ChunksPerThread],
                    V3Chunk (&b)[kV3ChunksPerThread]) const {
    const int kg = g.R * g.S * g.K;
    for (int i = 0; i < kV3ChunksPerThread; ++i) {
      a[i] = {v3_chunk_smem(false, v3_chunk_coord(false, tid, i)),
              ak < kg ? dgrad_gather(g, row[i], atap) : -1};
      const bool ok = bk[i] < kg && bn < g.C;
      b[i] = {v3_chunk_smem(true, v3_chunk_coord(true, tid, i)),
              ok ? btap[i].c * (g.R * g.S * g.C) + (btap[i].r * g.S + btap[i].s) * g.C + bn : -1};
    }
  }
  RZ_HD void advance(const IgemmGeom& g) {
    ak += kV3BK;
    advance_tap(atap, kV3BK, g.S, g.K);
    for (int i = 0; i < kV3ChunksPerThread; ++i) {
      bk[i] += kV3BK;
      advance_tap(btap[i], kV3BK, g.S, g.K);
    }
  }
};

struct V3WgradLoader {
  static constexpr bool kLoadsB = true;
  int p[kV3ChunksPerThread];  // reduction rows (output pixels) kt*64 + tid/16 + 16*i
  int am;                     // A column (output channel) of this thread's A chunks
  int bj;                     // B column (r, s, c) index of this thread's B chunks
  Tap btap;                   // its tap

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int bn0, int kt) {
    for (int i = 0; i < kV3ChunksPerThread; ++i)
      p[i] = kt * kV3BK + v3_chunk_coord(true, tid, i).first;
    const int c = v3_chunk_coord(true, tid, 0).second * kV3Vec;
    am = bm0 + c;
    bj = bn0 + c;
    btap = split_tap(bj, g.div_s, g.div_c);
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V3Chunk (&a)[kV3ChunksPerThread],
                    V3Chunk (&b)[kV3ChunksPerThread]) const {
    const int P = g.N * g.OH * g.OW;
    const bool bcol = bj < g.R * g.S * g.C;
    for (int i = 0; i < kV3ChunksPerThread; ++i) {
      const uint32_t so = v3_chunk_smem(true, v3_chunk_coord(true, tid, i));
      const bool prow = p[i] < P;
      a[i] = {so, (prow && am < g.K) ? p[i] * g.K + am : -1};
      b[i] = {so, (prow && bcol) ? fwd_gather(g, fwd_row(g, p[i]), btap) : -1};
    }
  }
  RZ_HD void advance(const IgemmGeom&) {
    for (int i = 0; i < kV3ChunksPerThread; ++i) p[i] += kV3BK;
  }
};

// ---------------------------------------------------------------------------
// Pipeline schedule (one block, local k-tiles 0 .. nk-1, stage of tile t =
// t % kV3Stages): the prologue loads tiles 0 .. kV3Stages-3; iteration i waits
// for tile i (cp.async.wait_group kV3Stages-3, the TMA barrier of its stage),
// fences to the async proxy, syncs the block, issues the 4 wgmma of tile i,
// then loads tile i + kV3Prefetch into the stage tile i-2 used (free: every
// warpgroup waited for wgmma(i-2) with wait_group 1 at the end of i-1), then
// waits until at most one wgmma batch (tile i) is in flight.
constexpr int kV3Prefetch = kV3Stages - 2;
constexpr int kV3CpAsyncPending = kV3Stages - 3;

// Fwd statistics scratch (reuses the ring after the main loop): per warp w
// (0..7) and tile column c, sum at [w][0][c] and sum of squares at [w][1][c],
// floats; the final per-column sums add warps 0..7 in order.
RZ_HD int v3_stats_slot(int warp, int which, int col) {
  return (warp * 2 + which) * kV3BN + col;
}

}  // namespace igemm
}  // namespace rz
