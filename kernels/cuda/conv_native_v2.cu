// Native convolution v2: bf16 tensor-core implicit GEMM (sm_80+), one kernel
// template for the three passes and three block-tile configurations.
//
// Warp tile 64 x 32 = 4 x 4 mma.sync.m16n8k16 (row.col, bf16 x bf16 -> fp32),
// k-tile 32, 3-stage ring in shared memory. Block tiles (igemm::V2Tile,
// kernels/common/conv_igemm.h), chosen per call by igemm::v2_pick_tile from
// the GEMM extents alone:
//   128 x 128  2 (M) x 4 (N) warps, 256 threads, 48 KiB ring  - the default;
//   128 x 64   2 x 2 warps, 128 threads, 36 KiB               - when N <= 64
//              (Fwd with K <= 64, Dgrad with C <= 64, Wgrad with R*S*C <= 64);
//   64 x 128   1 x 4 warps, 128 threads, 36 KiB               - when M <= 64 < N
//              (Wgrad with K <= 64; Fwd / Dgrad on maps of <= 64 pixels).
// On such GEMMs the square tile spends half its ldmatrix and mma work on
// zero-filled rows or columns; the half tiles drop those warps, and their
// smaller ring lets more blocks share an SM.
//   - every thread issues Tile::AChunks 16-byte cp.async.cg for A and
//     Tile::BChunks for B per k-tile (2 + 2, 4 + 2, 2 + 4); its
//     V2*Loader<Tile> names the source element (8 consecutive channels of
//     one tap) or -1, which becomes src-size 0 (the hardware zero-fills:
//     padding, the transposed Dgrad mapping's gaps, tile overhang);
//   - fragments come from swizzled shared memory with ldmatrix.x4 (.trans
//     for MN-major tiles: Dgrad B, Wgrad A and B), addresses from
//     v2_ldsm_a_offset / v2_ldsm_b_offset;
//   - pipeline: prologue fills stages 0..1; iteration i waits until k-tile i
//     has landed (cp.async.wait_group 1) and the block has finished reading
//     the stage it is about to refill (__syncthreads), issues k-tile i + 2,
//     then runs the 2 x 16 mma of k-tile i.
// Epilogue: each thread stores its accumulator pairs (2 adjacent columns) as
// one bf16x2 word (Fwd, Dgrad, single-split Wgrad) or one float2 of fp32
// partials (split-K Wgrad; detail::splitk_reduce adds the splits in order).
// Fwd applies ConvFwdEpilogue (kernels/common/conv_epilogue.h) before
// rounding, and with statistics sums each stored column over the block's BM
// rows: per thread (8 rows), xor shuffles across the 8 lane groups, then the
// WarpsM warp rows through shared memory (WarpsM x 2 x BN floats) - one
// extra __syncthreads pair and 2 x BN float stores per block. The
// statistics tile height is therefore the chosen BM, which
// detail::conv_fwd_tile_rows(V2, geometry) reports from the same rule.
// Not yet done: shared-memory staged epilogue (the direct stores write 16
// bytes per row per warp instruction), block rasterization for L2 reuse,
// stride-phase decomposition of Dgrad (with stride 2, 3/4 of the A gather of
// a 3x3 tap set is zero-fill), a 64 x 64 tile for GEMMs small in both M and N.
//
// Memory traffic per block and k-tile: (BM + BN) x 32 bf16 of operands for
// BM*BN*32 MACs: 128 x 128: 16 KiB for 524,288 MACs (32 MACs per loaded
// byte); 128 x 64 and 64 x 128: 12 KiB for 262,144 MACs (21.3 per byte).
// On a GEMM with N (or M) <= 64 the square tile reads the same global bytes
// (its extra chunks are zero-fill, which reads nothing) for the same useful
// MACs, so the half tiles cost no extra traffic there. A gathers of 3x3 convs
// re-read each input pixel up to 9 times, mostly from L2.
//
// Unvalidated on a GPU: the 128 x 64 and 64 x 128 configurations (and their
// selection) are proven only by the CPU emulation in
// tests/kernels/test_conv_igemm.cpp; tests/gpu/test_gpu_conv_native.cpp
// exercises every configuration through the selection rule.
#include <cstdint>

#include "kernels/cuda/conv_native.cuh"
#include "kernels/cuda/cp_async.cuh"

namespace rz {

namespace {

using namespace igemm;

template <ConvPass P, class Tile>
struct LoaderFor;
template <class Tile>
struct LoaderFor<ConvPass::Fwd, Tile> {
  using type = V2FwdLoader<Tile>;
};
template <class Tile>
struct LoaderFor<ConvPass::Dgrad, Tile> {
  using type = V2DgradLoader<Tile>;
};
template <class Tile>
struct LoaderFor<ConvPass::Wgrad, Tile> {
  using type = V2WgradLoader<Tile>;
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RZ_CONV_V2_DEVICE 1
#endif

#if defined(RZ_CONV_V2_DEVICE)
using cp_async::smem_u32;

template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  if constexpr (Trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }
}

// d += a * b for one 16x8x16 tile: a = 4 registers of bf16 pairs (row-major
// A fragment), b = 2 registers (column-major B fragment), d = 4 fp32.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

template <ConvPass P, class Tile>
__global__ void __launch_bounds__(Tile::Threads)
    conv_v2_kernel(IgemmGeom g, const bf16* a, const bf16* b, bf16* out, float* ws, int k_tiles,
                   int splits, ConvFwdEpilogue ep) {
#if defined(RZ_CONV_V2_DEVICE)
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const uint32_t smem = smem_u32(smem_raw);
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp % Tile::WarpsM, warp_n = warp / Tile::WarpsM;
  const int bm0 = static_cast<int>(blockIdx.x) * Tile::BM;
  const int bn0 = static_cast<int>(blockIdx.y) * Tile::BN;
  const KRange kr = split_k_range(k_tiles, splits, static_cast<int>(blockIdx.z));
  const int nk = kr.end - kr.begin;
  constexpr bool kATrans = v2_a_mnmajor(P);  // MN-major tiles load with ldmatrix .trans
  constexpr bool kBTrans = v2_b_mnmajor(P);

  typename LoaderFor<P, Tile>::type ld;
  ld.init(g, tid, bm0, bn0, kr.begin);

  // Issues the copies of the loader's current k-tile into `stage`, then
  // advances the loader to the next k-tile.
  auto load_tile = [&](int stage) {
    V2Chunk ca[Tile::AChunks], cb[Tile::BChunks];
    ld.chunks(g, tid, ca, cb);
    const uint32_t sa = smem + static_cast<uint32_t>(stage * Tile::StageElems * 2);
    const uint32_t sb = sa + Tile::ATileElems * 2;
    // One chunk into the tile at `base` (src < 0: zero-fill, nothing read).
    auto copy = [](uint32_t base, const V2Chunk& c, const bf16* src) {
      cp_async::copy_16(base + static_cast<uint32_t>(c.smem * 2), src + (c.src < 0 ? 0 : c.src),
                        c.src >= 0);
    };
    if constexpr (Tile::AChunks == Tile::BChunks) {
      // A and B interleaved (the 128 x 128 issue order).
#pragma unroll
      for (int i = 0; i < Tile::AChunks; ++i) {
        copy(sa, ca[i], a);
        copy(sb, cb[i], b);
      }
    } else {
#pragma unroll
      for (int i = 0; i < Tile::AChunks; ++i) copy(sa, ca[i], a);
#pragma unroll
      for (int i = 0; i < Tile::BChunks; ++i) copy(sb, cb[i], b);
    }
    ld.advance(g);
  };

  float acc[kV2MI][kV2NI][4];
#pragma unroll
  for (int mi = 0; mi < kV2MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < kV2NI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

#pragma unroll
  for (int s = 0; s < kV2Stages - 1; ++s) {
    if (s < nk) load_tile(s);
    cp_async::commit();  // possibly empty: keeps the group count uniform
  }

  for (int i = 0; i < nk; ++i) {
    cp_async::wait<kV2Stages - 2>();  // this thread's copies of k-tile i are done
    __syncthreads();                 // everyone's are, and stage (i-1) % S is free
    const int next = i + kV2Stages - 1;
    if (next < nk) load_tile(next % kV2Stages);
    cp_async::commit();

    const uint32_t sa = smem + static_cast<uint32_t>((i % kV2Stages) * Tile::StageElems * 2);
    const uint32_t sb = sa + Tile::ATileElems * 2;
#pragma unroll
    for (int kk = 0; kk < kV2BK / 16; ++kk) {
      uint32_t af[kV2MI][4];
      uint32_t bfr[kV2NI][2];
#pragma unroll
      for (int mi = 0; mi < kV2MI; ++mi)
        ldmatrix_x4<kATrans>(af[mi], sa + static_cast<uint32_t>(
                                              v2_ldsm_a_offset<Tile>(P, warp_m, mi, kk, lane) * 2));
#pragma unroll
      for (int np = 0; np < kV2NI / 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4<kBTrans>(
            r, sb + static_cast<uint32_t>(v2_ldsm_b_offset<Tile>(P, warp_n, np, kk, lane) * 2));
        bfr[2 * np][0] = r[0];
        bfr[2 * np][1] = r[1];
        bfr[2 * np + 1][0] = r[2];
        bfr[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < kV2MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < kV2NI; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni]);
    }
  }
  cp_async::wait<0>();  // only empty groups can remain; drain before exit

  const GemmDims d = gemm_dims(P, g);
  float* part = ws == nullptr
                    ? nullptr
                    : ws + static_cast<int64_t>(blockIdx.z) * d.M * static_cast<int64_t>(d.N);
  // Column sums of the stored values over this thread's 8 rows, per owned
  // column (ni, pair element e): Fwd statistics.
  float csum[kV2NI][2], csq[kV2NI][2];
#pragma unroll
  for (int ni = 0; ni < kV2NI; ++ni) csum[ni][0] = csum[ni][1] = csq[ni][0] = csq[ni][1] = 0.f;
#pragma unroll
  for (int mi = 0; mi < kV2MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < kV2NI; ++ni)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const TileRC rc = v2_acc_coord(warp_m, warp_n, mi, ni, lane, half);
        const int m = bm0 + rc.row, n = bn0 + rc.col;  // n even, N % 8 == 0: n + 1 < N too
        if (m >= d.M || n >= d.N) continue;
        const int64_t off = c_offset(d, m, n);
        const float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if (part != nullptr) {
          *reinterpret_cast<float2*>(part + off) = make_float2(v0, v1);
        } else {
          const bf16 y0 = f32_to_bf16(conv_epilogue_value(v0, ep.scale, ep.shift, ep.relu, n));
          const bf16 y1 = f32_to_bf16(conv_epilogue_value(v1, ep.scale, ep.shift, ep.relu, n + 1));
          *reinterpret_cast<uint32_t*>(out + off) =
              static_cast<uint32_t>(y0.bits) | (static_cast<uint32_t>(y1.bits) << 16);
          const float f0 = bf16_to_f32(y0), f1 = bf16_to_f32(y1);
          csum[ni][0] += f0;
          csum[ni][1] += f1;
          csq[ni][0] += f0 * f0;
          csq[ni][1] += f1 * f1;
        }
      }
  if constexpr (P == ConvPass::Fwd) {
    if (ep.stats != nullptr) {
      // Lanes with equal lane % 4 own the same columns (rows lane / 4): a
      // fixed xor tree over lane bits 2..4 sums the warp's 64 rows; then the
      // two warp rows (warp_m) meet in shared memory, reused after every warp
      // has left the main loop, and are added in warp_m order.
#pragma unroll
      for (int ni = 0; ni < kV2NI; ++ni)
#pragma unroll
        for (int e = 0; e < 2; ++e)
#pragma unroll
          for (int x = 4; x < 32; x <<= 1) {
            csum[ni][e] += __shfl_xor_sync(0xffffffffu, csum[ni][e], x);
            csq[ni][e] += __shfl_xor_sync(0xffffffffu, csq[ni][e], x);
          }
      __syncthreads();
      float* red = reinterpret_cast<float*>(smem_raw);  // [Tile::WarpsM][2][Tile::BN]
      if (lane < 4) {
#pragma unroll
        for (int ni = 0; ni < kV2NI; ++ni)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = v2_acc_coord(warp_m, warp_n, 0, ni, lane, 0).col + e;
            red[(warp_m * 2 + 0) * Tile::BN + col] = csum[ni][e];
            red[(warp_m * 2 + 1) * Tile::BN + col] = csq[ni][e];
          }
      }
      __syncthreads();
      if (tid < Tile::BN && bn0 + tid < d.N) {
        float s = 0.f, q = 0.f;
#pragma unroll
        for (int wm = 0; wm < Tile::WarpsM; ++wm) {
          s += red[(wm * 2 + 0) * Tile::BN + tid];
          q += red[(wm * 2 + 1) * Tile::BN + tid];
        }
        ep.stats[(static_cast<int64_t>(blockIdx.x) * 2 + 0) * d.N + bn0 + tid] = s;
        ep.stats[(static_cast<int64_t>(blockIdx.x) * 2 + 1) * d.N + bn0 + tid] = q;
      }
    }
  }
#else
  // Pre-sm_80 device code: never launched (the launcher checks the device).
  (void)g, (void)a, (void)b, (void)out, (void)ws, (void)k_tiles, (void)splits, (void)ep;
#endif
}

template <ConvPass P, class Tile>
cudaError_t launch_v2(const IgemmGeom& g, const bf16* a, const bf16* b, bf16* out, float* ws,
                      dim3 grid, int k_tiles, int splits, const ConvFwdEpilogue& ep,
                      cudaStream_t stream) {
  conv_v2_kernel<P, Tile>
      <<<grid, Tile::Threads, Tile::SmemBytes, stream>>>(g, a, b, out, ws, k_tiles, splits, ep);
  return cudaGetLastError();
}

template <class Tile>
cudaError_t launch_v2(ConvPass pass, const IgemmGeom& g, const bf16* a, const bf16* b, bf16* out,
                      float* ws, dim3 grid, int k_tiles, int splits, const ConvFwdEpilogue& ep,
                      cudaStream_t stream) {
  switch (pass) {
    case ConvPass::Fwd:
      return launch_v2<ConvPass::Fwd, Tile>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
    case ConvPass::Dgrad:
      return launch_v2<ConvPass::Dgrad, Tile>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
    case ConvPass::Wgrad:
      return launch_v2<ConvPass::Wgrad, Tile>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  }
  return cudaErrorInvalidValue;
}

// The configuration v2_pick_tile chose (t) as a template argument.
cudaError_t launch_v2(V2TileShape t, ConvPass pass, const IgemmGeom& g, const bf16* a,
                      const bf16* b, bf16* out, float* ws, dim3 grid, int k_tiles, int splits,
                      const ConvFwdEpilogue& ep, cudaStream_t stream) {
  if (t.bm == V2Tile128x64::BM && t.bn == V2Tile128x64::BN)
    return launch_v2<V2Tile128x64>(pass, g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  if (t.bm == V2Tile64x128::BM && t.bn == V2Tile64x128::BN)
    return launch_v2<V2Tile64x128>(pass, g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  return launch_v2<V2Tile128x128>(pass, g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
}

bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace

namespace detail {

cudaError_t conv_native_v2(ConvPass pass, const Conv2dGeom& g, const bf16* a, const bf16* b,
                           bf16* out, const ConvFwdEpilogue& ep, cudaStream_t stream) {
  if (!v2_geometry_ok(pass, g)) return cudaErrorInvalidValue;
  if (ep.any() && pass != ConvPass::Fwd) return cudaErrorInvalidValue;
  if (!aligned(a, 16) || !aligned(b, 16) || !aligned(out, 4)) return cudaErrorInvalidValue;
  int dev = 0, major = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err != cudaSuccess) return err;
  if (major < 8) return cudaErrorInvalidValue;

  IgemmGeom ig;
  make_igemm_geom(g, &ig);
  const GemmDims d = gemm_dims(pass, ig);
  if (d.M == 0 || d.N == 0) return cudaSuccess;
  const int64_t mn = static_cast<int64_t>(d.M) * d.N;
  if (d.K == 0) {
    if (ep.any()) return cudaErrorInvalidValue;
    return cudaMemsetAsync(out, 0, static_cast<size_t>(mn) * sizeof(bf16), stream);
  }
  const V2TileShape tile = v2_pick_tile(d);
  const int mt = (d.M + tile.bm - 1) / tile.bm, nt = (d.N + tile.bn - 1) / tile.bn;
  const int k_tiles = (d.K + kV2BK - 1) / kV2BK;
  int splits = 1;
  if (pass == ConvPass::Wgrad) {
    int sms = 0;
    err = current_sm_count(&sms);
    if (err != cudaSuccess) return err;
    splits = choose_splits(static_cast<int64_t>(mt) * nt, k_tiles, sms, mn, 4);
  }
  const dim3 grid(static_cast<unsigned>(mt), static_cast<unsigned>(nt),
                  static_cast<unsigned>(splits));
  if (splits == 1)
    return launch_v2(tile, pass, ig, a, b, out, nullptr, grid, k_tiles, 1, ep, stream);

  float* ws = nullptr;
  err = cudaMallocAsync(reinterpret_cast<void**>(&ws),
                        static_cast<size_t>(mn) * splits * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  err = launch_v2(tile, pass, ig, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  if (err == cudaSuccess) err = splitk_reduce<bf16>(ws, splits, mn, out, stream);
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  return err != cudaSuccess ? err : free_err;
}

}  // namespace detail

}  // namespace rz
