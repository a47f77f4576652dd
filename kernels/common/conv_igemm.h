// Index and tile logic of the native implicit-GEMM convolutions
// (kernels/cuda/conv_native_v1.cu, conv_native_v2.cu), shared with the CPU
// tests that emulate those kernels (tests/kernels/test_conv_igemm.cpp).
// Everything a kernel computes about "which element goes where" is a function
// here; the kernels only add the loops, the copies and the arithmetic.
//
// Meaning: the CPU twins of kernels/cpu/conv2d.h (NHWC x, y; KRSC w; no bias;
// cross-correlation; stride and zero padding; dilation 1; groups 1). Each pass
// is a row-major GEMM  C[M][N] = sum_k A[m][k] * B[k][n]  whose operands are
// gathered from the tensors on the fly (never materialized):
//
//   pass   M          N         K (reduction)  A[m][k]                   B[k][n]          C
//   Fwd    N*OH*OW    K         R*S*C          x[n, oh*sh-ph+r,          w[n, r, s, c]    y
//          (n,oh,ow)            (r,s,c)          ow*sw-pw+s, c] or 0
//   Dgrad  N*H*W      C         R*S*K          dy[n, oh, ow, kk] where   w[kk, r, s, n]   dx
//          (n,h,w)              (r,s,kk)         oh*sh-ph+r = h and
//                                                ow*sw-pw+s = w, else 0
//   Wgrad  K          R*S*C     N*OH*OW        dy[p][m]                  im2col(x)[p][n]  dw
//                     (r,s,c)   p=(n,oh,ow)                              (Fwd's A[p][n])
//
// In every pass C is row-major [M][N] with N contiguous, i.e. exactly the
// output tensor, so c_offset(m, n) = m*N + n. The reduction index is split
// with its channel fastest ((r, s, c) with c fastest), matching KRSC weights
// and NHWC activations, so 8 consecutive k share one tap when the channel
// count is a multiple of 8 (the v2 16-byte vectors).
//
// Integer width: kernels index with 32-bit ints. IgemmGeom is only made for
// geometries whose tensors each have at most kMaxElems (2^31 - 2^20)
// elements, so every element offset and GEMM extent, even one tile past the
// end, fits an int; divisions by geometry values use FastDivmod (a multiply
// and a shift, exact for 0 <= n < 2^31).
#pragma once

#include <cstdint>

#include "kernels/common/hostdev.h"
#include "kernels/cpu/conv2d.h"

namespace rz {

// The three GEMMs of a convolution: forward, gradient of the input (data),
// gradient of the weights (filter).
enum class ConvPass : int { Fwd = 0, Dgrad = 1, Wgrad = 2 };

namespace igemm {

// ---------------------------------------------------------------------------
// Exact division by a runtime constant d >= 1 for 0 <= n < 2^31:
//   q = (n * mul) >> (32 + shift),  shift = ceil(log2 d),  mul = ceil(2^(32+shift) / d).
// (Granlund-Montgomery: mul*d - 2^(32+shift) < d <= 2^shift makes the error term
// below 1/d for n < 2^32.) mul <= 2^33 and n < 2^31 keep n*mul below 2^64.
struct FastDivmod {
  int d = 1;
  int shift = 0;
  uint64_t mul = uint64_t{1} << 32;
};

inline FastDivmod make_fast_divmod(int d) {
  FastDivmod f;
  f.d = d < 1 ? 1 : d;
  int l = 0;
  while ((int64_t{1} << l) < f.d) ++l;
  f.shift = l;
  const uint64_t num = uint64_t{1} << (32 + l);
  const uint64_t ud = static_cast<uint64_t>(f.d);
  f.mul = num / ud + (num % ud != 0 ? 1 : 0);
  return f;
}

RZ_HD int fast_div(const FastDivmod& f, int n) {
  return static_cast<int>((static_cast<uint64_t>(n) * f.mul) >> (32 + f.shift));
}
// q = n / d and r = n % d.
RZ_HD void fast_divmod(const FastDivmod& f, int n, int& q, int& r) {
  q = fast_div(f, n);
  r = n - q * f.d;
}

// ---------------------------------------------------------------------------
// The geometry in 32-bit form with the divisors the gathers need.
struct IgemmGeom {
  int N, H, W, C, K, R, S, sh, sw, ph, pw, OH, OW;
  FastDivmod div_w, div_h;    // input pixel m -> (n, h, w)        (Dgrad rows)
  FastDivmod div_ow, div_oh;  // output pixel p -> (n, oh, ow)     (Fwd rows, Wgrad k)
  FastDivmod div_c, div_s;    // tap over input channels k -> (r, s, c)  (Fwd k, Wgrad n)
  FastDivmod div_k;           // tap over output channels k -> (r, s, kk)  (Dgrad k)
  FastDivmod div_sh, div_sw;  // Dgrad: th -> (oh, th % sh)
};

// Largest tensor handled: 2^31 - 2^20 elements, so that indices a tile reads
// past the end of a GEMM extent (up to one block tile or a few k-tiles) still
// fit an int.
constexpr int64_t kMaxElems = (int64_t{1} << 31) - (int64_t{1} << 20);

// True and *out filled when g is a valid convolution (all sizes >= 1 except
// N >= 0, strides >= 1, padding >= 0, OH/OW as make_conv2d_geom computes
// them) and x, w, y each have at most kMaxElems elements.
inline bool make_igemm_geom(const Conv2dGeom& g, IgemmGeom* out) {
  if (g.N < 0 || g.H < 1 || g.W < 1 || g.C < 1 || g.K < 1 || g.R < 1 || g.S < 1) return false;
  if (g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0 || g.OH < 1 || g.OW < 1) return false;
  if (g.OH != (g.H + 2 * g.ph - g.R) / g.sh + 1 || g.OW != (g.W + 2 * g.pw - g.S) / g.sw + 1)
    return false;
  const int64_t lim = kMaxElems;
  // Products in a fixed order, each factor checked first, so nothing overflows int64.
  auto fits = [lim](int64_t a, int64_t b, int64_t c, int64_t d) {
    if (a > lim || b > lim || c > lim || d > lim) return false;
    if (a * b > lim) return false;
    if (a * b * c > lim) return false;
    return a * b * c * d <= lim;
  };
  if (!fits(g.N, g.H, g.W, g.C) || !fits(g.N, g.OH, g.OW, g.K) || !fits(g.K, g.R, g.S, g.C))
    return false;
  if (g.R * g.S * g.K > lim || g.sh > lim || g.sw > lim || g.ph > lim || g.pw > lim) return false;
  auto i32 = [](int64_t v) { return static_cast<int>(v); };
  IgemmGeom r;
  r.N = i32(g.N), r.H = i32(g.H), r.W = i32(g.W), r.C = i32(g.C), r.K = i32(g.K);
  r.R = i32(g.R), r.S = i32(g.S), r.sh = i32(g.sh), r.sw = i32(g.sw), r.ph = i32(g.ph);
  r.pw = i32(g.pw), r.OH = i32(g.OH), r.OW = i32(g.OW);
  r.div_w = make_fast_divmod(r.W);
  r.div_h = make_fast_divmod(r.H);
  r.div_ow = make_fast_divmod(r.OW);
  r.div_oh = make_fast_divmod(r.OH);
  r.div_c = make_fast_divmod(r.C);
  r.div_s = make_fast_divmod(r.S);
  r.div_k = make_fast_divmod(r.K);
  r.div_sh = make_fast_divmod(r.sh);
  r.div_sw = make_fast_divmod(r.sw);
  *out = r;
  return true;
}

struct GemmDims {
  int M, N, K;
};

RZ_HD GemmDims gemm_dims(ConvPass p, const IgemmGeom& g) {
  const int rsc = g.R * g.S * g.C;
  if (p == ConvPass::Fwd) return {g.N * g.OH * g.OW, g.K, rsc};
  if (p == ConvPass::Dgrad) return {g.N * g.H * g.W, g.C, g.R * g.S * g.K};
  return {g.K, rsc, g.N * g.OH * g.OW};
}

// ---------------------------------------------------------------------------
// Reduction taps: k -> (r, s, c) with c fastest over `channels` (C for Fwd's
// k and Wgrad's n, K for Dgrad's k). div_c divides by `channels`.
struct Tap {
  int r, s, c;
};

RZ_HD Tap split_tap(int k, const FastDivmod& div_s, const FastDivmod& div_c) {
  Tap t;
  int rs;
  fast_divmod(div_c, k, rs, t.c);
  fast_divmod(div_s, rs, t.r, t.s);
  return t;
}

// The tap of k + step (step >= 0), from the tap of k, without a division.
RZ_HD void advance_tap(Tap& t, int step, int S, int channels) {
  t.c += step;
  while (t.c >= channels) {
    t.c -= channels;
    if (++t.s == S) {
      t.s = 0;
      ++t.r;
    }
  }
}

// A Fwd row m = (n, oh, ow) (also Wgrad's reduction index p): where its
// receptive field starts. base = offset of image n in x.
struct FwdRow {
  int base, h0, w0;
  bool valid;  // m < N*OH*OW
};

RZ_HD FwdRow fwd_row(const IgemmGeom& g, int m) {
  FwdRow row;
  int t, ow, n, oh;
  fast_divmod(g.div_ow, m, t, ow);
  fast_divmod(g.div_oh, t, n, oh);
  row.valid = n < g.N;
  row.base = row.valid ? n * g.H * g.W * g.C : 0;
  row.h0 = oh * g.sh - g.ph;
  row.w0 = ow * g.sw - g.pw;
  return row;
}

// Offset in x of A[row][tap] (Fwd) = im2col(x)[row][tap], or -1 when the tap
// reads padding or the row is past the end.
RZ_HD int fwd_gather(const IgemmGeom& g, const FwdRow& row, const Tap& t) {
  const int ih = row.h0 + t.r, iw = row.w0 + t.s;
  if (!row.valid || ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return -1;
  return row.base + (ih * g.W + iw) * g.C + t.c;
}

// A Dgrad row m = (n, h, w): base = offset of image n in dy; th0 = h + ph,
// tw0 = w + pw (the output row oh of tap r satisfies oh*sh = th0 - r).
struct DgradRow {
  int base, th0, tw0;
  bool valid;  // m < N*H*W
};

RZ_HD DgradRow dgrad_row(const IgemmGeom& g, int m) {
  DgradRow row;
  int t, w, n, h;
  fast_divmod(g.div_w, m, t, w);
  fast_divmod(g.div_h, t, n, h);
  row.valid = n < g.N;
  row.base = row.valid ? n * g.OH * g.OW * g.K : 0;
  row.th0 = h + g.ph;
  row.tw0 = w + g.pw;
  return row;
}

// Offset in dy of A[row][tap] (Dgrad, tap = (r, s, kk)): dy[n, oh, ow, kk] for
// the output pixel whose tap (r, s) reads input pixel (h, w), i.e.
// oh*sh - ph + r = h and ow*sw - pw + s = w; -1 when no such output pixel
// exists (h + ph - r negative, not a multiple of the stride, or oh >= OH).
RZ_HD int dgrad_gather(const IgemmGeom& g, const DgradRow& row, const Tap& t) {
  const int th = row.th0 - t.r, tw = row.tw0 - t.s;
  if (!row.valid || th < 0 || tw < 0) return -1;
  int oh, rh, ow, rw;
  fast_divmod(g.div_sh, th, oh, rh);
  fast_divmod(g.div_sw, tw, ow, rw);
  if (rh != 0 || rw != 0 || oh >= g.OH || ow >= g.OW) return -1;
  return row.base + (oh * g.OW + ow) * g.K + t.c;
}

// Element-wise operand offsets (A into the pass's A tensor: x, dy, dy; B into
// w, w, x), -1 for a zero (padding, no contributing output pixel, or (m, k) /
// (k, n) outside the GEMM). The v1 kernels gather through these directly.
RZ_HD int a_offset(ConvPass p, const IgemmGeom& g, int m, int k) {
  const GemmDims d = gemm_dims(p, g);
  if (m < 0 || m >= d.M || k < 0 || k >= d.K) return -1;
  if (p == ConvPass::Fwd) return fwd_gather(g, fwd_row(g, m), split_tap(k, g.div_s, g.div_c));
  if (p == ConvPass::Dgrad) return dgrad_gather(g, dgrad_row(g, m), split_tap(k, g.div_s, g.div_k));
  return k * g.K + m;  // Wgrad: dy[p][m]
}

RZ_HD int b_offset(ConvPass p, const IgemmGeom& g, int k, int n) {
  const GemmDims d = gemm_dims(p, g);
  if (k < 0 || k >= d.K || n < 0 || n >= d.N) return -1;
  if (p == ConvPass::Fwd) return n * d.K + k;  // w[n][k]
  if (p == ConvPass::Dgrad) {
    const Tap t = split_tap(k, g.div_s, g.div_k);                  // (r, s, kk)
    return t.c * (g.R * g.S * g.C) + (t.r * g.S + t.s) * g.C + n;  // w[kk, r, s, n]
  }
  return fwd_gather(g, fwd_row(g, k), split_tap(n, g.div_s, g.div_c));  // Wgrad: im2col(x)[k][n]
}

RZ_HD int64_t c_offset(const GemmDims& d, int m, int n) {
  return static_cast<int64_t>(m) * d.N + n;
}

// ---------------------------------------------------------------------------
// Split-K (Wgrad: M*N is small, the reduction over N*OH*OW pixels is long):
// split z of `splits` reduces k-tiles [begin, end); the splits partition
// [0, k_tiles) in order. Partial sums go to an fp32 workspace [splits][M][N]
// that a second kernel adds in split order (deterministic).
struct KRange {
  int begin, end;
};

RZ_HD KRange split_k_range(int k_tiles, int splits, int split) {
  const int64_t kt = k_tiles;
  return {static_cast<int>(kt * split / splits), static_cast<int>(kt * (split + 1) / splits)};
}

// Splits for a GEMM of mn_tiles output tiles and k_tiles reduction tiles on
// sm_count SMs: enough blocks for about two waves, at least min_k_tiles per
// split, at most kMaxSplits, and a workspace of at most kMaxWorkspaceBytes.
constexpr int kMaxSplits = 64;
constexpr int64_t kMaxWorkspaceBytes = int64_t{256} << 20;

inline int choose_splits(int64_t mn_tiles, int64_t k_tiles, int sm_count, int64_t mn_elems,
                         int64_t min_k_tiles) {
  if (mn_tiles < 1 || k_tiles < 1) return 1;
  int64_t s = (2 * static_cast<int64_t>(sm_count) + mn_tiles - 1) / mn_tiles;
  const int64_t by_k = k_tiles / (min_k_tiles < 1 ? 1 : min_k_tiles);
  const int64_t by_ws = kMaxWorkspaceBytes / (mn_elems * 4 > 0 ? mn_elems * 4 : 1);
  if (s > by_k) s = by_k;
  if (s > by_ws) s = by_ws;
  if (s > kMaxSplits) s = kMaxSplits;
  return s < 1 ? 1 : static_cast<int>(s);
}

// ---------------------------------------------------------------------------
// v1: fp32 FMA tiles. A block of kV1Threads computes a kV1BM x kV1BN tile of C;
// per k-tile of kV1BK it stages A as [BK][BM] and B as [BK][BN] in shared
// memory (values converted to fp32), then thread (ty, tx) = (tid / 16, tid % 16)
// accumulates rows ty + 16*i and columns tx + 16*j (i, j < 4).
constexpr int kV1BM = 64, kV1BN = 64, kV1BK = 16, kV1Threads = 256, kV1TM = 4, kV1TN = 4;

// Element e (= tid + kV1Threads*round) of an operand tile with `mn_extent`
// rows along M (or N): k fastest when the tensor is contiguous along k (so
// neighbouring threads read neighbouring addresses), else m (or n) fastest.
struct TileElem {
  int mn, k;
};

RZ_HD TileElem v1_tile_elem(int e, int mn_extent, bool k_contiguous) {
  if (k_contiguous) return {e / kV1BK, e % kV1BK};
  return {e % mn_extent, e / mn_extent};
}

// v1 handles any valid geometry with 32-bit offsets; grid.y holds the N tiles.
inline bool v1_geometry_ok(ConvPass p, const Conv2dGeom& g) {
  IgemmGeom ig;
  if (!make_igemm_geom(g, &ig)) return false;
  const GemmDims d = gemm_dims(p, ig);
  return (d.N + kV1BN - 1) / kV1BN <= 65535;
}

// Which operands are contiguous along the reduction: Fwd A (x along c), Fwd B
// (w[n][k]), Dgrad A (dy along kk). Dgrad B (w along c = n), Wgrad A (dy along
// m) and Wgrad B (x along c = n) are contiguous along M / N.
RZ_HD bool a_k_contiguous(ConvPass p) {
  return p != ConvPass::Wgrad;
}
RZ_HD bool b_k_contiguous(ConvPass p) {
  return p == ConvPass::Fwd;
}

// ---------------------------------------------------------------------------
// v2: bf16 tensor cores (mma.sync m16n8k16, row.col, fp32 accumulate).
// Warp tile 64 x 32 = 4 x 4 mma tiles of 16 x 8, k-tile 32, a kV2Stages-deep
// cp.async ring of A and B tiles. The block tile is one of three
// configurations (V2Tile below), chosen per call by v2_pick_tile.
constexpr int kV2BK = 32, kV2Stages = 3;
constexpr int kV2WM = 64, kV2WN = 32, kV2MI = 4, kV2NI = 4;
constexpr int kV2Vec = 8;  // bf16 per 16-byte cp.async

// A block tile of BM (M) x BN (N): (BM / 64) x (BN / 32) warps, each owning a
// 64 x 32 warp tile; warp w sits at (warp_m, warp_n) = (w % WarpsM, w / WarpsM).
// A tile [BM][32] and B tile [BN][32] (or their MN-major transposes) per stage,
// A then B. Every thread issues AChunks 16-byte copies of A and BChunks of B
// per k-tile.
template <int BM_, int BN_>
struct V2Tile {
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int WarpsM = BM / kV2WM, WarpsN = BN / kV2WN, Warps = WarpsM * WarpsN;
  static constexpr int Threads = 32 * Warps;
  static constexpr int ATileElems = BM * kV2BK, BTileElems = BN * kV2BK;
  static constexpr int StageElems = ATileElems + BTileElems;
  static constexpr int SmemBytes = kV2Stages * StageElems * 2;
  static constexpr int AChunks = ATileElems / kV2Vec / Threads;  // per thread and k-tile
  static constexpr int BChunks = BTileElems / kV2Vec / Threads;
  static_assert(BM % kV2WM == 0 && BN % kV2WN == 0, "whole warp tiles");
  static_assert(BM % 64 == 0 && BN % 64 == 0,
                "MN-major rows of >= 8 chunks keep the k & 7 swizzle in range");
  static_assert(AChunks * Threads * kV2Vec == ATileElems, "A chunks spread evenly");
  static_assert(BChunks * Threads * kV2Vec == BTileElems, "B chunks spread evenly");
  static_assert(Threads % (BM / 8) == 0 && Threads % (BN / 8) == 0,
                "a thread keeps its MN-major chunk column over its chunks");
  static_assert(Threads >= BN, "the statistics epilogue has a thread per column");
  static_assert(SmemBytes <= 48 * 1024, "v2 shared memory fits the default limit");
  static_assert(2 * WarpsM * BN * 4 <= SmemBytes, "statistics scratch fits the ring");
};
// The configurations. 128x128 (8 warps as 2 x 4, 256 threads, 48 KiB ring)
// is the general one; 128x64 (2 x 2 warps, 128 threads, 36 KiB) and 64x128
// (1 x 4 warps, 128 threads, 36 KiB) serve GEMMs whose N or M is at most 64,
// where the square tile would spend half its mma on zero-filled columns/rows.
using V2Tile128x128 = V2Tile<128, 128>;
using V2Tile128x64 = V2Tile<128, 64>;
using V2Tile64x128 = V2Tile<64, 128>;

struct V2TileShape {
  int bm, bn;
};

// The selection rule (the launcher, conv_fwd_tile_rows and the tests use
// only this):
//   N <= 64            -> 128 x 64   (Fwd K <= 64, Dgrad C <= 64, Wgrad R*S*C <= 64)
//   M <= 64 < N        -> 64 x 128   (Wgrad K <= 64; Fwd/Dgrad on tiny maps)
//   otherwise          -> 128 x 128
// When both are <= 64 the N rule wins (either tile wastes half its work).
// A function of the GEMM extents only, so a Fwd call's statistics tile
// height is known from the geometry before the launch.
RZ_HD V2TileShape v2_pick_tile(const GemmDims& d) {
  if (d.N <= 64) return {V2Tile128x64::BM, V2Tile128x64::BN};
  if (d.M <= 64) return {V2Tile64x128::BM, V2Tile64x128::BN};
  return {V2Tile128x128::BM, V2Tile128x128::BN};
}

// v2 needs 16-byte vectors along every operand's contiguous dimension, an even
// output row length, and 32-bit offsets; grid.y holds the N tiles.
inline bool v2_geometry_ok(ConvPass p, const Conv2dGeom& g) {
  IgemmGeom ig;
  if (!make_igemm_geom(g, &ig)) return false;
  if (g.C % kV2Vec != 0 || g.K % kV2Vec != 0) return false;
  const GemmDims d = gemm_dims(p, ig);
  return (d.N + v2_pick_tile(d).bn - 1) / v2_pick_tile(d).bn <= 65535;
}

// Two shared-memory tile layouts, both of 16-byte chunks (8 bf16), swizzled so
// that the 8 row addresses of every ldmatrix 8x8 matrix and every warp's
// cp.async stores hit distinct bank groups:
//   K-major  [BM or BN rows of M or N][32 k]: 4 chunks per row (64 bytes);
//            chunk kc of row r lives at chunk kc ^ ((r >> 1) & 3).
//   MN-major [32 k][Extent = BM or BN of M or N]: Extent / 8 chunks per row
//            (128 or 256 bytes, a multiple of the 8 bank groups); chunk c of
//            row k lives at chunk c ^ (k & 7).
// Offsets are in bf16 elements from the tile start (multiples of 8: 16 bytes).
RZ_HD int kmajor_offset(int row, int kc) {
  return row * kV2BK + ((kc ^ ((row >> 1) & 3)) << 3);
}
template <int Extent>
RZ_HD int mnmajor_offset(int k, int c) {
  return k * Extent + ((c ^ (k & 7)) << 3);
}

// Operand layouts: A is K-major for Fwd/Dgrad (rows m, k contiguous in
// memory), MN-major for Wgrad (dy is contiguous along m). B is K-major for Fwd
// (w[n][k]), MN-major for Dgrad (w along c) and Wgrad (x along c).
constexpr RZ_HD bool v2_a_mnmajor(ConvPass p) {
  return p == ConvPass::Wgrad;
}
constexpr RZ_HD bool v2_b_mnmajor(ConvPass p) {
  return p != ConvPass::Fwd;
}

// Chunk i of thread tid in a tile of Extent rows of M or N filled by Threads
// threads: id = tid + Threads*i. K-major: (row, kc) = (id / 4, id % 4);
// MN-major: (k, c) = (id / (Extent/8), id % (Extent/8)). `first` is the row
// (M/N or k), `second` the chunk. Threads is a multiple of 4 and of Extent/8,
// so a thread's kc (K-major) or c (MN-major) is the same for all its chunks.
struct ChunkCoord {
  int first, second;
};
template <int Extent, int Threads>
RZ_HD ChunkCoord v2_chunk_coord(bool mnmajor, int tid, int i) {
  const int id = tid + Threads * i;
  if (mnmajor) return {id / (Extent / 8), id % (Extent / 8)};
  return {id >> 2, id & 3};
}
// The A and B chunks of configuration Tile.
template <class Tile>
RZ_HD ChunkCoord v2_a_chunk(bool mnmajor, int tid, int i) {
  return v2_chunk_coord<Tile::BM, Tile::Threads>(mnmajor, tid, i);
}
template <class Tile>
RZ_HD ChunkCoord v2_b_chunk(bool mnmajor, int tid, int i) {
  return v2_chunk_coord<Tile::BN, Tile::Threads>(mnmajor, tid, i);
}

// One 16-byte copy: shared-memory element offset within the tile and global
// element offset of its first element, src < 0 meaning zero-fill
// (cp.async with src-size 0).
struct V2Chunk {
  int smem, src;
};

// Per-thread gather state of the v2 loaders, one per pass and configuration.
// init() places the thread at k-tile kt of block (bm0, bn0); chunks() gives
// its Tile::AChunks A and Tile::BChunks B copies for the current k-tile;
// advance() moves to the next k-tile (the taps advance by kV2BK without
// dividing). A source offsets index the pass's A tensor (x, dy, dy), B
// offsets its B tensor (w, w, x).
template <class Tile>
struct V2FwdLoader {
  static constexpr int NA = Tile::AChunks, NB = Tile::BChunks;
  FwdRow row[NA];  // A rows bm0 + tid/4 + (Threads/4)*i
  int n[NB];       // B rows (output channels) bn0 + tid/4 + (Threads/4)*i
  Tap tap;         // tap of k (A), shared by all A chunks
  int k;           // k of this thread's chunks (A and B: both K-major, same kc)

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int bn0, int kt) {
    for (int i = 0; i < NA; ++i) row[i] = fwd_row(g, bm0 + v2_a_chunk<Tile>(false, tid, i).first);
    for (int i = 0; i < NB; ++i) n[i] = bn0 + v2_b_chunk<Tile>(false, tid, i).first;
    k = kt * kV2BK + v2_a_chunk<Tile>(false, tid, 0).second * kV2Vec;
    tap = split_tap(k, g.div_s, g.div_c);
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V2Chunk (&a)[NA], V2Chunk (&b)[NB]) const {
    const int kg = g.R * g.S * g.C;
    for (int i = 0; i < NA; ++i) {
      const ChunkCoord cc = v2_a_chunk<Tile>(false, tid, i);
      a[i] = {kmajor_offset(cc.first, cc.second), k < kg ? fwd_gather(g, row[i], tap) : -1};
    }
    for (int i = 0; i < NB; ++i) {
      const ChunkCoord cc = v2_b_chunk<Tile>(false, tid, i);
      b[i] = {kmajor_offset(cc.first, cc.second), (k < kg && n[i] < g.K) ? n[i] * kg + k : -1};
    }
  }
  RZ_HD void advance(const IgemmGeom& g) {
    k += kV2BK;
    advance_tap(tap, kV2BK, g.S, g.C);
  }
};

template <class Tile>
struct V2DgradLoader {
  static constexpr int NA = Tile::AChunks, NB = Tile::BChunks;
  DgradRow row[NA];  // A rows bm0 + tid/4 + (Threads/4)*i
  Tap atap;          // (r, s, kk) of the A chunks' k
  int ak;
  Tap btap[NB];  // (r, s, kk) of B rows k = kt*32 + v2_b_chunk(true, tid, i).first
  int bk[NB];
  int bn;  // B column (input channel) of this thread's B chunks

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int bn0, int kt) {
    for (int i = 0; i < NA; ++i) row[i] = dgrad_row(g, bm0 + v2_a_chunk<Tile>(false, tid, i).first);
    for (int i = 0; i < NB; ++i) {
      bk[i] = kt * kV2BK + v2_b_chunk<Tile>(true, tid, i).first;
      btap[i] = split_tap(bk[i], g.div_s, g.div_k);
    }
    ak = kt * kV2BK + v2_a_chunk<Tile>(false, tid, 0).second * kV2Vec;
    atap = split_tap(ak, g.div_s, g.div_k);
    bn = bn0 + v2_b_chunk<Tile>(true, tid, 0).second * kV2Vec;
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V2Chunk (&a)[NA], V2Chunk (&b)[NB]) const {
    const int kg = g.R * g.S * g.K;
    for (int i = 0; i < NA; ++i) {
      const ChunkCoord ca = v2_a_chunk<Tile>(false, tid, i);
      a[i] = {kmajor_offset(ca.first, ca.second), ak < kg ? dgrad_gather(g, row[i], atap) : -1};
    }
    for (int i = 0; i < NB; ++i) {
      const ChunkCoord cb = v2_b_chunk<Tile>(true, tid, i);
      const bool ok = bk[i] < kg && bn < g.C;
      b[i] = {mnmajor_offset<Tile::BN>(cb.first, cb.second),
              ok ? btap[i].c * (g.R * g.S * g.C) + (btap[i].r * g.S + btap[i].s) * g.C + bn : -1};
    }
  }
  RZ_HD void advance(const IgemmGeom& g) {
    ak += kV2BK;
    advance_tap(atap, kV2BK, g.S, g.K);
    for (int i = 0; i < NB; ++i) {
      bk[i] += kV2BK;
      advance_tap(btap[i], kV2BK, g.S, g.K);
    }
  }
};

template <class Tile>
struct V2WgradLoader {
  static constexpr int NA = Tile::AChunks, NB = Tile::BChunks;
  int ap[NA];  // A reduction rows (output pixels) kt*32 + v2_a_chunk(true, tid, i).first
  int bp[NB];  // B reduction rows kt*32 + v2_b_chunk(true, tid, i).first
  int am;      // A column (output channel) of this thread's A chunks
  int bj;      // B column (r, s, c) index of this thread's B chunks
  Tap btap;    // its tap

  RZ_HD void init(const IgemmGeom& g, int tid, int bm0, int bn0, int kt) {
    for (int i = 0; i < NA; ++i) ap[i] = kt * kV2BK + v2_a_chunk<Tile>(true, tid, i).first;
    for (int i = 0; i < NB; ++i) bp[i] = kt * kV2BK + v2_b_chunk<Tile>(true, tid, i).first;
    am = bm0 + v2_a_chunk<Tile>(true, tid, 0).second * kV2Vec;
    bj = bn0 + v2_b_chunk<Tile>(true, tid, 0).second * kV2Vec;
    btap = split_tap(bj, g.div_s, g.div_c);
  }
  RZ_HD void chunks(const IgemmGeom& g, int tid, V2Chunk (&a)[NA], V2Chunk (&b)[NB]) const {
    const int P = g.N * g.OH * g.OW;
    const bool bcol = bj < g.R * g.S * g.C;
    for (int i = 0; i < NA; ++i) {
      const ChunkCoord cc = v2_a_chunk<Tile>(true, tid, i);
      a[i] = {mnmajor_offset<Tile::BM>(cc.first, cc.second),
              (ap[i] < P && am < g.K) ? ap[i] * g.K + am : -1};
    }
    for (int i = 0; i < NB; ++i) {
      const ChunkCoord cc = v2_b_chunk<Tile>(true, tid, i);
      b[i] = {mnmajor_offset<Tile::BN>(cc.first, cc.second),
              (bp[i] < P && bcol) ? fwd_gather(g, fwd_row(g, bp[i]), btap) : -1};
    }
  }
  RZ_HD void advance(const IgemmGeom&) {
    for (int i = 0; i < NA; ++i) ap[i] += kV2BK;
    for (int i = 0; i < NB; ++i) bp[i] += kV2BK;
  }
};

// ldmatrix.x4 lane addresses. Lane l supplies row (l % 8) of 8x8 matrix l / 8;
// matrix q becomes the thread's register q. For one 16x16 A fragment of
// mma.m16n8k16 the four registers are (rows 0-7, k 0-7), (rows 8-15, k 0-7),
// (rows 0-7, k 8-15), (rows 8-15, k 8-15); for a pair of 16x8 B fragments
// (n-tiles 0 and 1) they are (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
// (n 8-15, k 8-15). K-major tiles load these directly, MN-major tiles with
// .trans (the stored rows are then k, and each 16-byte row holds 8 m or n).
// Offsets are in elements from the tile start; warp_m / warp_n index the warp's
// 64 x 32 sub-tile, mi an m16 tile, np a pair of n8 tiles, kk a k16 step.
template <class Tile>
RZ_HD int v2_ldsm_a_offset(ConvPass p, int warp_m, int mi, int kk, int lane) {
  const int m0 = warp_m * kV2WM + mi * 16;
  if (!v2_a_mnmajor(p)) return kmajor_offset(m0 + (lane & 15), kk * 2 + (lane >> 4));
  const int k = kk * 16 + (lane & 7) + ((lane >> 4) << 3);
  return mnmajor_offset<Tile::BM>(k, (m0 >> 3) + ((lane >> 3) & 1));
}

template <class Tile>
RZ_HD int v2_ldsm_b_offset(ConvPass p, int warp_n, int np, int kk, int lane) {
  const int n0 = warp_n * kV2WN + np * 16;
  if (!v2_b_mnmajor(p))
    return kmajor_offset(n0 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1));
  const int k = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
  return mnmajor_offset<Tile::BN>(k, (n0 >> 3) + (lane >> 4));
}

// Accumulator ownership (mma.m16n8k16 D fragment): registers 2*half and
// 2*half + 1 of tile (mi, ni) hold C[row][col] and C[row][col + 1] of the
// block tile, row = warp_m*64 + mi*16 + lane/4 + 8*half, col = warp_n*32 +
// ni*8 + 2*(lane % 4) (the same in every configuration).
struct TileRC {
  int row, col;
};
RZ_HD TileRC v2_acc_coord(int warp_m, int warp_n, int mi, int ni, int lane, int half) {
  return {warp_m * kV2WM + mi * 16 + (lane >> 2) + 8 * half,
          warp_n * kV2WN + ni * 8 + 2 * (lane & 3)};
}

}  // namespace igemm
}  // namespace rz
