// Native convolution v3: bf16 implicit GEMM on Hopper (sm_90a) with warpgroup
// MMA from shared memory and TMA, one kernel template for the three passes.
// UNVALIDATED ON A GPU: the index, layout, descriptor and fragment logic is
// proven by the CPU emulation in tests/kernels/test_conv_wgmma.cpp; the
// kernel itself only by tests/gpu/test_gpu_conv_v3.cpp, which has not run yet.
//
// Block: 256 threads = 2 warpgroups, block tile 128 x 128, k-tile 64;
// warpgroup wg owns rows 64*wg .. 64*wg + 63 and issues 4
// wgmma.mma_async.m64n128k16.f32.bf16.bf16 per k-tile (64 fp32 accumulators
// per thread), both operands from shared memory through 64-bit matrix
// descriptors in the 128-byte swizzle mode (kernels/common/conv_wgmma.h).
// MN-major tiles (Wgrad A; Dgrad and Wgrad B) use the transpose immediates.
// Operands stream through a 4-stage ring (4 x 32 KiB):
//   - gathered operands (Fwd A = im2col(x), Dgrad A = the transposed gather
//     of dy, Wgrad B = im2col(x)) and the other non-Fwd operands: every thread
//     issues four 16-byte cp.async.cg per operand and k-tile (zero-fill with
//     src-size 0 for padding and overhang) straight into the swizzled layout;
//   - Fwd B (w as a row-major [K][R*S*C] matrix) is one TMA box (64 x 128,
//     128-byte swizzle, zero out of range) per k-tile, issued by thread 0 on
//     the stage's mbarrier with expect_tx; the CUtensorMap comes from
//     cuTensorMapEncodeTiled (through cudaGetDriverEntryPointByVersion, no
//     libcuda link) as a __grid_constant__ parameter, encoded once per
//     weight buffer and shape (an LRU keyed by V3WeightMapKey);
//   - schedule (igemm::kV3Prefetch): iteration i waits for tile i
//     (cp.async.wait_group 1, the stage's mbarrier parity), fences the
//     landed cp.async data into the async proxy (fence.proxy.async), syncs
//     the block, issues tile i's wgmma batch (wgmma.fence, 4 x wgmma,
//     commit_group), loads tile i + 2 into the stage of tile i - 2, and waits
//     with wgmma.wait_group 1, so one batch stays in flight while the next
//     tile's loads are issued and tile i + 1 lands.
// Why not a producer warpgroup: the gathers need address arithmetic per
// 16-byte chunk (1024 chunks per operand tile); spreading them over all 256
// threads keeps them off the critical path, and one __syncthreads per k-tile
// orders the ring (mbarriers only where TMA needs them).
// Epilogue: each thread stores its accumulator pairs as bf16x2 (Fwd: after
// conv_epilogue_value), or float2 fp32 partials for split-K Wgrad
// (detail::splitk_reduce adds the splits in order). Fwd statistics: per
// thread sums over its rows, xor-shuffles over the 8 lanes sharing a column,
// a [8 warps][2][128] float scratch in the (drained) ring, then 128 threads
// add the 8 warps in order and store stats[(bx*2 + {0,1})*K + n] once.
// Not yet done: a producer/consumer split with setmaxnreg, TMA for Wgrad A
// and Dgrad B (dense but tap-strided), TMA-store / staged epilogue, 128 x 256
// tiles, clusters with multicast, persistent tile scheduling, stride-phase
// decomposition of Dgrad.
//
// Memory traffic per block and k-tile: 2 x 16 KiB of operands for
// 128*128*64 MACs (64 MACs per loaded byte, as v2 but with half the
// synchronizations per MAC); the 3x3 gathers re-read input pixels from L2.
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "kernels/common/conv_wgmma.h"
#include "kernels/common/host_cache.h"
#include "kernels/cuda/conv_native.cuh"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/conv_native_v3.cuh"

#if defined(RZ_CONV_V3_SM90A)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled and CUtensorMap (types only)
#endif

namespace rz {

#if defined(RZ_CONV_V3_SM90A)
namespace {

using namespace igemm;

template <ConvPass P>
struct V3LoaderFor;
template <>
struct V3LoaderFor<ConvPass::Fwd> {
  using type = V3FwdLoader;
};
template <>
struct V3LoaderFor<ConvPass::Dgrad> {
  using type = V3DgradLoader;
};
template <>
struct V3LoaderFor<ConvPass::Wgrad> {
  using type = V3WgradLoader;
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RZ_CONV_V3_DEVICE 1
#endif

#if defined(RZ_CONV_V3_DEVICE)
using cp_async::smem_u32;

// Orders this thread's completed generic-proxy shared-memory writes (the
// landed cp.async data) before later async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait_parity(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (done == 0);
}

// TMA: box at (c0 inner, c1 outer) of the 2-D tensor map into shared memory,
// completion (bytes) reported to mbarrier `bar`.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator accesses across the async MMAs.
__device__ __forceinline__ void fence_acc(float (&d)[kV3AccRegs]) {
#pragma unroll
  for (int i = 0; i < kV3AccRegs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d += A * B for one m64n128k16 step; A, B from shared memory descriptors,
// TransA / TransB = 1 for MN-major operands.
template <int TransA, int TransB>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[kV3AccRegs], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, %67, %68;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(da), "l"(db), "r"(1), "n"(TransA), "n"(TransB));
}
#endif

template <ConvPass P>
__global__ void __launch_bounds__(kV3Threads, 1)
    conv_v3_kernel(const __grid_constant__ CUtensorMap tmap_b, IgemmGeom g, const bf16* a,
                   const bf16* b, bf16* out, float* ws, int k_tiles, int splits,
                   ConvFwdEpilogue ep) {
#if defined(RZ_CONV_V3_DEVICE)
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kV3Stages];
  // The swizzle pattern and the descriptors (base offset 0) assume a
  // 1024-byte aligned ring; the launch reserves 1024 bytes of slack.
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t smem = (raw + 1023u) & ~1023u;
  unsigned char* smem_ptr = smem_raw + (smem - raw);
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, wq = warp & 3;
  const int bm0 = static_cast<int>(blockIdx.x) * kV3BM, bn0 = static_cast<int>(blockIdx.y) * kV3BN;
  const KRange kr = split_k_range(k_tiles, splits, static_cast<int>(blockIdx.z));
  const int nk = kr.end - kr.begin;
  constexpr bool kTma = v3_b_uses_tma(P);
  using Loader = typename V3LoaderFor<P>::type;
  static_assert(Loader::kLoadsB != kTma, "B comes either by TMA or by the loader");

  if (kTma && tid == 0) {
#pragma unroll
    for (int s = 0; s < kV3Stages; ++s) mbar_init(smem_u32(&full_bar[s]), 1);
    mbar_fence_init();
  }
  __syncthreads();

  Loader ld;
  ld.init(g, tid, bm0, bn0, kr.begin);

  // Issues local k-tile t (the loader's current one) into stage t % S.
  auto load_tile = [&](int t) {
    const int stage = t % kV3Stages;
    const uint32_t sa = smem + static_cast<uint32_t>(stage * kV3StageBytes);
    const uint32_t sb = sa + kV3TileBytes;
    V3Chunk ca[kV3ChunksPerThread], cb[kV3ChunksPerThread];
    ld.chunks(g, tid, ca, cb);
#pragma unroll
    for (int i = 0; i < kV3ChunksPerThread; ++i)
      cp_async::copy_16(sa + ca[i].smem, a + (ca[i].src < 0 ? 0 : ca[i].src), ca[i].src >= 0);
    if constexpr (Loader::kLoadsB) {
#pragma unroll
      for (int i = 0; i < kV3ChunksPerThread; ++i)
        cp_async::copy_16(sb + cb[i].smem, b + (cb[i].src < 0 ? 0 : cb[i].src), cb[i].src >= 0);
    } else {
      if (tid == 0) {
        const uint32_t bar = smem_u32(&full_bar[stage]);
        const TmaCoord c = v3_tma_b_coord(bn0, kr.begin + t);
        mbar_arrive_expect_tx(bar, kV3TileBytes);
        tma_load_2d(sb, &tmap_b, c.k0, c.n0, bar);
      }
    }
    ld.advance(g);
  };

  float acc[kV3AccRegs];
#pragma unroll
  for (int i = 0; i < kV3AccRegs; ++i) acc[i] = 0.f;

#pragma unroll
  for (int t = 0; t < kV3Prefetch; ++t) {
    if (t < nk) load_tile(t);
    cp_async::commit();  // possibly empty: keeps the group count uniform
  }

  constexpr int kTA = v3_a_mnmajor(P) ? 1 : 0, kTB = v3_b_mnmajor(P) ? 1 : 0;
  for (int i = 0; i < nk; ++i) {
    const int stage = i % kV3Stages;
    cp_async::wait<kV3CpAsyncPending>();  // this thread's copies of tile i landed
    if constexpr (kTma) mbar_wait_parity(smem_u32(&full_bar[stage]), (i / kV3Stages) & 1);
    fence_proxy_async_smem();
    __syncthreads();  // everyone's copies landed; wgmma(i - 2) done in every warpgroup

    const uint32_t sa = smem + static_cast<uint32_t>(stage * kV3StageBytes);
    const uint32_t sb = sa + kV3TileBytes;
    wgmma_fence();
    fence_acc(acc);
#pragma unroll
    for (int ks = 0; ks < kV3KSteps; ++ks)
      wgmma_m64n128k16<kTA, kTB>(acc, v3_a_desc(P, sa, wg, ks), v3_b_desc(P, sb, ks));
    wgmma_commit();
    fence_acc(acc);

    const int next = i + kV3Prefetch;
    if (next < nk) load_tile(next);
    cp_async::commit();
    __syncwarp();     // reconverge after thread 0's TMA issue: wgmma.wait_group is .aligned
    wgmma_wait<1>();  // wgmma(i - 1) done: its stage may be refilled next iteration
    fence_acc(acc);
  }
  wgmma_wait<0>();
  fence_acc(acc);
  cp_async::wait<0>();  // only empty groups can remain

  const GemmDims d = gemm_dims(P, g);
  if constexpr (P == ConvPass::Fwd) {
    float ssum[kV3AccRegs / 2], ssq[kV3AccRegs / 2];  // per (n8 block, column parity)
#pragma unroll
    for (int j = 0; j < kV3AccRegs / 2; ++j) ssum[j] = ssq[j] = 0.f;
#pragma unroll
    for (int reg = 0; reg < kV3AccRegs; reg += 2) {
      const TileRC rc = v3_acc_coord(wg, wq, lane, reg);
      const int m = bm0 + rc.row, n = bn0 + rc.col;  // n even, N % 8 == 0: n + 1 < N too
      if (m >= d.M || n >= d.N) continue;
      const float v0 = conv_epilogue_value(acc[reg], ep.scale, ep.shift, ep.relu, n);
      const float v1 = conv_epilogue_value(acc[reg + 1], ep.scale, ep.shift, ep.relu, n + 1);
      const bf16 h0 = f32_to_bf16(v0), h1 = f32_to_bf16(v1);
      const uint32_t word = static_cast<uint32_t>(h0.bits) | (static_cast<uint32_t>(h1.bits) << 16);
      *reinterpret_cast<uint32_t*>(out + c_offset(d, m, n)) = word;
      const float r0 = bf16_to_f32(h0), r1 = bf16_to_f32(h1);
      const int slot = (reg >> 2) * 2;  // registers 4j + {0,1} and 4j + {2,3} share columns
      ssum[slot] += r0;
      ssq[slot] += r0 * r0;
      ssum[slot + 1] += r1;
      ssq[slot + 1] += r1 * r1;
    }
    if (ep.stats != nullptr) {
      // Lanes with equal lane % 4 hold the same columns: add over lane bits 2-4.
#pragma unroll
      for (int j = 0; j < kV3AccRegs / 2; ++j)
#pragma unroll
        for (int off = 4; off < 32; off <<= 1) {
          ssum[j] += __shfl_xor_sync(0xffffffffu, ssum[j], off);
          ssq[j] += __shfl_xor_sync(0xffffffffu, ssq[j], off);
        }
      __syncthreads();  // every warpgroup's wgmma has finished reading the ring
      float* red = reinterpret_cast<float*>(smem_ptr);
      if (lane < 4) {
#pragma unroll
        for (int j = 0; j < kV3AccRegs / 2; ++j) {
          const int col = v3_acc_coord(wg, wq, lane, 2 * (j & ~1) + (j & 1)).col;
          red[v3_stats_slot(warp, 0, col)] = ssum[j];
          red[v3_stats_slot(warp, 1, col)] = ssq[j];
        }
      }
      __syncthreads();
      if (tid < kV3BN && bn0 + tid < d.N) {
        float s = 0.f, q = 0.f;
        for (int w = 0; w < kV3Threads / 32; ++w) {
          s += red[v3_stats_slot(w, 0, tid)];
          q += red[v3_stats_slot(w, 1, tid)];
        }
        const int64_t t = blockIdx.x;
        ep.stats[(t * 2 + 0) * d.N + bn0 + tid] = s;
        ep.stats[(t * 2 + 1) * d.N + bn0 + tid] = q;
      }
    }
  } else {
    float* part = ws == nullptr
                      ? nullptr
                      : ws + static_cast<int64_t>(blockIdx.z) * d.M * static_cast<int64_t>(d.N);
#pragma unroll
    for (int reg = 0; reg < kV3AccRegs; reg += 2) {
      const TileRC rc = v3_acc_coord(wg, wq, lane, reg);
      const int m = bm0 + rc.row, n = bn0 + rc.col;
      if (m >= d.M || n >= d.N) continue;
      const int64_t off = c_offset(d, m, n);
      if (part != nullptr) {
        *reinterpret_cast<float2*>(part + off) = make_float2(acc[reg], acc[reg + 1]);
      } else {
        const uint32_t lo = f32_to_bf16(acc[reg]).bits, hi = f32_to_bf16(acc[reg + 1]).bits;
        *reinterpret_cast<uint32_t*>(out + off) = lo | (hi << 16);
      }
    }
  }
#else
  // Not sm_90a device code: never launched (the launcher checks the binary).
  (void)tmap_b, (void)g, (void)a, (void)b, (void)out, (void)ws, (void)k_tiles, (void)splits,
      (void)ep;
#endif
}

// Kernel P on device `device` (current): cudaErrorInvalidValue when it is not
// there as sm_90a code (binaryVersion < 90: the caller falls back), else its
// dynamic shared-memory limit raised to kV3SmemBytes. Both belong to the
// device's loaded module and do not change, so they are asked once per
// instantiation and device; a failing call is returned and asked again next time.
template <ConvPass P>
cudaError_t prepare_v3_kernel(int device) {
  static PerDeviceMemo<cudaError_t> prepared;
  return prepared.get(device, [] {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, conv_v3_kernel<P>) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the non-sticky error; the caller falls back
      return std::pair{cudaErrorInvalidValue, false};
    }
    if (attr.binaryVersion < 90) return std::pair{cudaErrorInvalidValue, true};
    const cudaError_t err = cudaFuncSetAttribute(
        conv_v3_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, kV3SmemBytes);
    return std::pair{err, err == cudaSuccess};
  });
}

template <ConvPass P>
cudaError_t launch_v3(int device, const CUtensorMap& tmap, const IgemmGeom& g, const bf16* a,
                      const bf16* b, bf16* out, float* ws, dim3 grid, int k_tiles, int splits,
                      const ConvFwdEpilogue& ep, cudaStream_t stream) {
  const cudaError_t err = prepare_v3_kernel<P>(device);
  if (err != cudaSuccess) return err;
  conv_v3_kernel<P>
      <<<grid, kV3Threads, kV3SmemBytes, stream>>>(tmap, g, a, b, out, ws, k_tiles, splits, ep);
  return cudaGetLastError();
}

cudaError_t launch_v3(ConvPass pass, int device, const CUtensorMap& tmap, const IgemmGeom& g,
                      const bf16* a, const bf16* b, bf16* out, float* ws, dim3 grid, int k_tiles,
                      int splits, const ConvFwdEpilogue& ep, cudaStream_t stream) {
  switch (pass) {
    case ConvPass::Fwd:
      return launch_v3<ConvPass::Fwd>(device, tmap, g, a, b, out, ws, grid, k_tiles, splits, ep,
                                      stream);
    case ConvPass::Dgrad:
      return launch_v3<ConvPass::Dgrad>(device, tmap, g, a, b, out, ws, grid, k_tiles, splits, ep,
                                        stream);
    case ConvPass::Wgrad:
      return launch_v3<ConvPass::Wgrad>(device, tmap, g, a, b, out, ws, grid, k_tiles, splits, ep,
                                        stream);
  }
  return cudaErrorInvalidValue;
}

// The driver's cuTensorMapEncodeTiled, looked up once through the runtime
// (no link against libcuda); null when the driver lacks it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                           cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// The map of key k (v3_weight_map_key: w as a row-major bf16 [K][R*S*C]
// matrix, box 64 (k) x 128 (output channels)), 128-byte swizzle, zero fill
// out of range: the K-major B tile. Every varying argument comes from k.
cudaError_t encode_weight_tensor_map(const V3WeightMapKey& k, CUtensorMap* map) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorInvalidValue;
  const cuuint64_t dims[2] = {k.dims[0], k.dims[1]};
  const cuuint64_t strides[1] = {k.row_stride_bytes};
  const cuuint32_t box[2] = {k.box[0], k.box[1]};
  const cuuint32_t elem_strides[2] = {k.elem_strides[0], k.elem_strides[1]};
  void* w = reinterpret_cast<void*>(static_cast<uintptr_t>(k.address));
  const CUresult r =
      encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, w, dims, strides, box, elem_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// Encoded weight maps, process-wide (keys name the device). A training step
// uses one per conv layer; 1024 hold every layer of a teacher and a student
// seresnet152d (about 155 each) with room for autotuning's scratch buffers.
constexpr size_t kWeightMapCacheEntries = 1024;

cudaError_t weight_tensor_map(const IgemmGeom& g, const bf16* w, int device, CUtensorMap* map) {
  static LruCache<V3WeightMapKey, CUtensorMap, V3WeightMapKeyHash> cache(kWeightMapCacheEntries);
  const V3WeightMapKey key = v3_weight_map_key(g, w, device);
  if (const std::optional<CUtensorMap> hit = cache.find(key)) {
    *map = *hit;
    return cudaSuccess;
  }
  const cudaError_t err = encode_weight_tensor_map(key, map);
  if (err == cudaSuccess) cache.put(key, *map);
  return err;
}

bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace
#endif  // RZ_CONV_V3_SM90A

namespace detail {

bool conv_native_v3_available() {
#if !defined(RZ_CONV_V3_SM90A)
  return false;
#else
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (major != 9) return false;
  if (prepare_v3_kernel<ConvPass::Fwd>(dev) == cudaSuccess) return true;
  (void)cudaGetLastError();
  return false;
#endif
}

cudaError_t conv_native_v3(ConvPass pass, const Conv2dGeom& g, const bf16* a, const bf16* b,
                           bf16* out, const ConvFwdEpilogue& ep, cudaStream_t stream) {
#if !defined(RZ_CONV_V3_SM90A)
  // Built without sm_90 in CMAKE_CUDA_ARCHITECTURES: no v3 code to run.
  (void)pass, (void)g, (void)a, (void)b, (void)out, (void)ep, (void)stream;
  return cudaErrorInvalidValue;
#else
  if (!v3_geometry_ok(pass, g)) return cudaErrorInvalidValue;
  if (pass != ConvPass::Fwd && ep.any()) return cudaErrorInvalidValue;
  if ((ep.scale == nullptr) != (ep.shift == nullptr)) return cudaErrorInvalidValue;
  if (!aligned(a, 16) || !aligned(b, 16) || !aligned(out, 4)) return cudaErrorInvalidValue;
  if (ep.stats != nullptr && !aligned(ep.stats, 4)) return cudaErrorInvalidValue;
  int dev = 0, major = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err != cudaSuccess) return err;
  if (major != 9) return cudaErrorInvalidValue;

  IgemmGeom ig;
  make_igemm_geom(g, &ig);
  const GemmDims d = gemm_dims(pass, ig);
  if (d.M == 0 || d.N == 0) return cudaSuccess;
  const int64_t mn = static_cast<int64_t>(d.M) * d.N;
  // Only Wgrad with an empty batch reduces over nothing (no epilogue there).
  if (d.K == 0) return cudaMemsetAsync(out, 0, static_cast<size_t>(mn) * sizeof(bf16), stream);
  const int mt = (d.M + kV3BM - 1) / kV3BM, nt = (d.N + kV3BN - 1) / kV3BN;
  const int k_tiles = (d.K + kV3BK - 1) / kV3BK;

  CUtensorMap tmap;
  std::memset(&tmap, 0, sizeof tmap);  // unused by Dgrad / Wgrad
  if (pass == ConvPass::Fwd) {
    err = weight_tensor_map(ig, b, dev, &tmap);
    if (err != cudaSuccess) return err;
  }
  int splits = 1;
  if (pass == ConvPass::Wgrad) {
    int sms = 0;
    err = current_sm_count(&sms);
    if (err != cudaSuccess) return err;
    splits = choose_splits(static_cast<int64_t>(mt) * nt, k_tiles, sms, mn, 2);
  }
  const dim3 grid(static_cast<unsigned>(mt), static_cast<unsigned>(nt),
                  static_cast<unsigned>(splits));
  if (splits == 1)
    return launch_v3(pass, dev, tmap, ig, a, b, out, nullptr, grid, k_tiles, 1, ep, stream);

  float* ws = nullptr;
  err = cudaMallocAsync(reinterpret_cast<void**>(&ws),
                        static_cast<size_t>(mn) * splits * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  err = launch_v3(pass, dev, tmap, ig, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  if (err == cudaSuccess) err = splitk_reduce<bf16>(ws, splits, mn, out, stream);
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  return err != cudaSuccess ? err : free_err;
#endif
}

}  // namespace detail

}  // namespace rz
