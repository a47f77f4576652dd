// Native convolution v1: the readable implicit-GEMM reference, plus the
// variant switch of kernels/cuda/conv_native.cuh and the split-K reduction
// both variants share.
//
// One kernel serves the three passes (template on ConvPass): a block computes a
// 64x64 tile of C = A*B (kernels/common/conv_igemm.h has the operand mapping);
// per 16-wide k-tile each of its 256 threads gathers 4 elements of A and 4 of
// B through a_offset / b_offset (zero for padding and out-of-range), converts
// them to fp32 into shared memory, then accumulates a 4x4 micro-tile with fp32
// FMAs. No tensor cores, no vector loads, no double buffering.
// Wgrad splits its reduction over gridDim.z blocks when M*N is small (fp32
// partials in a stream-ordered workspace, added in split order).
//
// Memory traffic per block and k-tile: (64 + 64) * 16 gathered elements for
// 64*64*16 FMAs (32 FMAs per loaded element); gathers go through L1/L2, so
// the overlapping 3x3 windows are mostly cache hits. Compute: 16 FMAs per
// shared-memory load pair per thread.
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/common/conv_wgmma.h"
#include "kernels/cuda/conv_native.cuh"
#include "kernels/cuda/conv_native_v3.cuh"

namespace rz {

namespace {

using namespace igemm;
using cuda_common::load_f32;
using cuda_common::store_f32;

template <typename T, ConvPass P>
__global__ void __launch_bounds__(kV1Threads)
    conv_v1_kernel(IgemmGeom g, const T* a, const T* b, T* out, float* ws, int k_tiles,
                   int splits, ConvFwdEpilogue ep) {
  // +1 column: the k-fastest stores of a warp (16 k x 2 rows) spread over banks.
  __shared__ float As[kV1BK][kV1BM + 1];
  __shared__ float Bs[kV1BK][kV1BN + 1];
  const GemmDims d = gemm_dims(P, g);
  const int tid = static_cast<int>(threadIdx.x);
  const int ty = tid / 16, tx = tid % 16;
  const int bm0 = static_cast<int>(blockIdx.x) * kV1BM, bn0 = static_cast<int>(blockIdx.y) * kV1BN;
  const KRange kr = split_k_range(k_tiles, splits, static_cast<int>(blockIdx.z));

  float acc[kV1TM][kV1TN];
#pragma unroll
  for (int i = 0; i < kV1TM; ++i)
#pragma unroll
    for (int j = 0; j < kV1TN; ++j) acc[i][j] = 0.f;

  for (int kt = kr.begin; kt < kr.end; ++kt) {
    const int k0 = kt * kV1BK;
#pragma unroll
    for (int r = 0; r < kV1BM * kV1BK / kV1Threads; ++r) {
      const TileElem e = v1_tile_elem(tid + r * kV1Threads, kV1BM, a_k_contiguous(P));
      const int off = a_offset(P, g, bm0 + e.mn, k0 + e.k);
      As[e.k][e.mn] = off < 0 ? 0.f : load_f32(a[off]);
    }
#pragma unroll
    for (int r = 0; r < kV1BN * kV1BK / kV1Threads; ++r) {
      const TileElem e = v1_tile_elem(tid + r * kV1Threads, kV1BN, b_k_contiguous(P));
      const int off = b_offset(P, g, k0 + e.k, bn0 + e.mn);
      Bs[e.k][e.mn] = off < 0 ? 0.f : load_f32(b[off]);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kV1BK; ++k) {
      float av[kV1TM], bv[kV1TN];
#pragma unroll
      for (int i = 0; i < kV1TM; ++i) av[i] = As[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < kV1TN; ++j) bv[j] = Bs[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < kV1TM; ++i)
#pragma unroll
        for (int j = 0; j < kV1TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();  // the next k-tile overwrites the tiles
  }

  float* part = ws == nullptr
                    ? nullptr
                    : ws + static_cast<int64_t>(blockIdx.z) * d.M * static_cast<int64_t>(d.N);
  // Column sums of the stored values over this thread's 4 rows (Fwd stats).
  float csum[kV1TN], csq[kV1TN];
#pragma unroll
  for (int j = 0; j < kV1TN; ++j) csum[j] = csq[j] = 0.f;
#pragma unroll
  for (int i = 0; i < kV1TM; ++i)
#pragma unroll
    for (int j = 0; j < kV1TN; ++j) {
      const int m = bm0 + ty + 16 * i, n = bn0 + tx + 16 * j;
      if (m >= d.M || n >= d.N) continue;
      const int64_t off = c_offset(d, m, n);
      if (part != nullptr) {
        part[off] = acc[i][j];
      } else {
        const T v = store_f32<T>(conv_epilogue_value(acc[i][j], ep.scale, ep.shift, ep.relu, n));
        out[off] = v;
        const float f = load_f32(v);
        csum[j] += f;
        csq[j] += f * f;
      }
    }
  if constexpr (P == ConvPass::Fwd) {
    if (ep.stats != nullptr) {
      // The 16 row-threads of each column meet in shared memory (the operand
      // tiles are free: every thread passed the last __syncthreads), then
      // thread row 0 adds them in row order: fixed order, no atomics.
#pragma unroll
      for (int j = 0; j < kV1TN; ++j) {
        As[ty][tx + 16 * j] = csum[j];
        Bs[ty][tx + 16 * j] = csq[j];
      }
      __syncthreads();
      if (ty == 0) {
#pragma unroll
        for (int j = 0; j < kV1TN; ++j) {
          const int c = tx + 16 * j, n = bn0 + c;
          float s = 0.f, q = 0.f;
          for (int r = 0; r < 16; ++r) {
            s += As[r][c];
            q += Bs[r][c];
          }
          if (n < d.N) {
            ep.stats[(static_cast<int64_t>(blockIdx.x) * 2 + 0) * d.N + n] = s;
            ep.stats[(static_cast<int64_t>(blockIdx.x) * 2 + 1) * d.N + n] = q;
          }
        }
      }
    }
  }
}

template <typename T, ConvPass P>
cudaError_t launch_v1(const IgemmGeom& g, const T* a, const T* b, T* out, float* ws, dim3 grid,
                      int k_tiles, int splits, const ConvFwdEpilogue& ep, cudaStream_t stream) {
  conv_v1_kernel<T, P><<<grid, kV1Threads, 0, stream>>>(g, a, b, out, ws, k_tiles, splits, ep);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_v1(ConvPass pass, const IgemmGeom& g, const T* a, const T* b, T* out, float* ws,
                      dim3 grid, int k_tiles, int splits, const ConvFwdEpilogue& ep,
                      cudaStream_t stream) {
  switch (pass) {
    case ConvPass::Fwd:
      return launch_v1<T, ConvPass::Fwd>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
    case ConvPass::Dgrad:
      return launch_v1<T, ConvPass::Dgrad>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
    case ConvPass::Wgrad:
      return launch_v1<T, ConvPass::Wgrad>(g, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t run(ConvVariant v, ConvPass pass, const Conv2dGeom& g, const T* a, const T* b, T* out,
                const ConvFwdEpilogue& ep, cudaStream_t stream) {
  if (v == ConvVariant::V1) return detail::conv_native_v1<T>(pass, g, a, b, out, ep, stream);
  if constexpr (std::is_same_v<T, bf16>) {
    if (v == ConvVariant::V2) return detail::conv_native_v2(pass, g, a, b, out, ep, stream);
    if (v == ConvVariant::V3) {
      // The ladder's v3 declines GEMMs narrower than half its tile (v3_declines).
      if (!v3_supported(pass, g)) return cudaErrorInvalidValue;
      return detail::conv_native_v3(pass, g, a, b, out, ep, stream);
    }
  }
  return cudaErrorInvalidValue;
}

// Statistics finalize, pass A: grid (ceil(2K / 32), chunks, segments), block
// 32 x 8. Column c of chunk j of segment s: lane ty adds that segment's tiles
// j*per + ty, j*per + ty + 8, ... in order (double), then a fixed tree over
// the 8 lanes into chunk_sums[(s * chunks + j) * 2K + c].
constexpr int kStatLanes = 8;
constexpr int kStatTilesPerChunk = 256;
constexpr int kStatMaxChunks = 128;

__global__ void __launch_bounds__(32 * kStatLanes)
    stats_chunks_kernel(const float* partials, int seg_tiles, int64_t cols, int per_chunk,
                        double* chunk_sums) {
  __shared__ double part[kStatLanes][32];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.z) * seg_tiles;
  const int t0 = static_cast<int>(blockIdx.y) * per_chunk;
  const int t1 = min(seg_tiles, t0 + per_chunk);
  double acc = 0.0;
  if (c < cols)
    for (int t = t0 + ty; t < t1; t += kStatLanes)
      acc += static_cast<double>(partials[(tile0 + t) * cols + c]);
  part[ty][tx] = acc;
  __syncthreads();
  for (int half = kStatLanes / 2; half > 0; half /= 2) {
    if (ty < half) part[ty][tx] += part[ty + half][tx];
    __syncthreads();
  }
  if (ty == 0 && c < cols)
    chunk_sums[(static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * cols + c] = part[0][tx];
}

}  // namespace

namespace detail {

cudaError_t current_sm_count(int* sms) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  return cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev);
}

template <typename T>
cudaError_t splitk_reduce(const float* ws, int splits, int64_t mn, T* out, cudaStream_t stream) {
  return cuda_common::launch_map(mn, stream, [=] __device__(int64_t i) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += ws[z * mn + i];
    out[i] = store_f32<T>(s);
  });
}

template <typename T>
cudaError_t conv_native_v1(ConvPass pass, const Conv2dGeom& g, const T* a, const T* b, T* out,
                           const ConvFwdEpilogue& ep, cudaStream_t stream) {
  if (!v1_geometry_ok(pass, g)) return cudaErrorInvalidValue;
  if (ep.any() && pass != ConvPass::Fwd) return cudaErrorInvalidValue;
  IgemmGeom ig;
  make_igemm_geom(g, &ig);
  const GemmDims d = gemm_dims(pass, ig);
  if (d.M == 0 || d.N == 0) return cudaSuccess;
  const int64_t mn = static_cast<int64_t>(d.M) * d.N;
  if (d.K == 0) {
    if (ep.any()) return cudaErrorInvalidValue;
    return cudaMemsetAsync(out, 0, static_cast<size_t>(mn) * sizeof(T), stream);
  }
  const int mt = (d.M + kV1BM - 1) / kV1BM, nt = (d.N + kV1BN - 1) / kV1BN;
  const int k_tiles = (d.K + kV1BK - 1) / kV1BK;
  int splits = 1;
  if (pass == ConvPass::Wgrad) {
    int sms = 0;
    const cudaError_t err = current_sm_count(&sms);
    if (err != cudaSuccess) return err;
    splits = choose_splits(static_cast<int64_t>(mt) * nt, k_tiles, sms, mn, 8);
  }
  const dim3 grid(static_cast<unsigned>(mt), static_cast<unsigned>(nt),
                  static_cast<unsigned>(splits));
  if (splits == 1) return launch_v1<T>(pass, ig, a, b, out, nullptr, grid, k_tiles, 1, ep, stream);

  float* ws = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&ws),
                                    static_cast<size_t>(mn) * splits * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  err = launch_v1<T>(pass, ig, a, b, out, ws, grid, k_tiles, splits, ep, stream);
  if (err == cudaSuccess) err = splitk_reduce<T>(ws, splits, mn, out, stream);
  const cudaError_t free_err = cudaFreeAsync(ws, stream);
  return err != cudaSuccess ? err : free_err;
}

int conv_fwd_tile_rows(ConvVariant v, const Conv2dGeom& g) {
  switch (v) {
    case ConvVariant::V1: return kV1BM;
    case ConvVariant::V2: {
      IgemmGeom ig;
      if (!make_igemm_geom(g, &ig)) return 0;
      return v2_pick_tile(gemm_dims(ConvPass::Fwd, ig)).bm;
    }
    case ConvVariant::V3: return kV3BM;
  }
  return 0;
}

cudaError_t conv_stats_finalize(const float* partials, int tiles, int64_t K, int64_t segments,
                                double* sums, cudaStream_t stream) {
  if (tiles < 0 || K < 0 || segments < 1 || segments > 65535 || tiles % segments != 0 ||
      (K > 0 && sums == nullptr) || (tiles > 0 && K > 0 && partials == nullptr))
    return cudaErrorInvalidValue;
  if (K == 0) return cudaSuccess;
  if (tiles == 0)
    return cudaMemsetAsync(sums, 0, static_cast<size_t>(2 * segments * K) * sizeof(double), stream);
  const int64_t cols = 2 * K;  // partials are [tiles][2][K] = [tiles][cols]
  const int seg_tiles = static_cast<int>(tiles / segments);
  int chunks = (seg_tiles + kStatTilesPerChunk - 1) / kStatTilesPerChunk;
  if (chunks > kStatMaxChunks) chunks = kStatMaxChunks;
  const int per_chunk = (seg_tiles + chunks - 1) / chunks;
  return cuda_common::with_stream_workspace<double>(
      static_cast<size_t>(segments * chunks * cols), stream, [&](double* chunk_sums) {
        const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks),
                        static_cast<unsigned>(segments));
        stats_chunks_kernel<<<grid, dim3(32, kStatLanes), 0, stream>>>(partials, seg_tiles, cols,
                                                                        per_chunk, chunk_sums);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        // Pass B: one thread per (segment, column) adds the chunks in order
        // and stores to sums[(column / K * segments + segment) * K + column % K].
        return cuda_common::launch_map(segments * cols, stream, [=] __device__(int64_t i) {
          const int64_t seg = i / cols, c = i % cols;
          double acc = 0.0;
          for (int j = 0; j < chunks; ++j) acc += chunk_sums[(seg * chunks + j) * cols + c];
          sums[((c / K) * segments + seg) * K + c % K] = acc;
        });
      });
}

}  // namespace detail

const char* conv_variant_name(ConvVariant v) {
  switch (v) {
    case ConvVariant::V1:
      return "v1";
    case ConvVariant::V2:
      return "v2";
    case ConvVariant::V3:
      return "v3";
  }
  return "unknown";
}

bool conv_native_available(ConvVariant v) {
  switch (v) {
    case ConvVariant::V1: return true;
    case ConvVariant::V2: {
      int dev = 0, major = 0;
      if (cudaGetDevice(&dev) != cudaSuccess ||
          cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      return major >= 8;
    }
    case ConvVariant::V3: return detail::conv_native_v3_available();
  }
  return false;
}

template <typename T>
bool conv2d_native_supported(ConvVariant v, ConvPass pass, const Conv2dGeom& g) {
  if (v == ConvVariant::V1) return v1_geometry_ok(pass, g);
  if (v == ConvVariant::V2) return std::is_same_v<T, bf16> && v2_geometry_ok(pass, g);
  if (v == ConvVariant::V3) return std::is_same_v<T, bf16> && v3_supported(pass, g);
  return false;
}

template <typename T>
cudaError_t conv2d_fwd_native(ConvVariant v, const Conv2dGeom& g, const T* x, const T* w, T* y,
                              cudaStream_t stream) {
  return run<T>(v, ConvPass::Fwd, g, x, w, y, ConvFwdEpilogue{}, stream);
}

template <typename T>
cudaError_t conv2d_fwd_native_fused(ConvVariant v, const Conv2dGeom& g, const T* x, const T* w,
                                    T* y, const ConvFwdFusion& f, cudaStream_t stream) {
  if ((f.scale == nullptr) != (f.shift == nullptr)) return cudaErrorInvalidValue;
  ConvFwdEpilogue ep;
  ep.scale = f.scale;
  ep.shift = f.shift;
  ep.relu = f.relu;
  if (f.sums == nullptr) return run<T>(v, ConvPass::Fwd, g, x, w, y, ep, stream);
  if (!conv2d_native_supported<T>(v, ConvPass::Fwd, g)) return cudaErrorInvalidValue;
  const int64_t M = g.N * g.OH * g.OW, K = g.K, S = f.segments;
  if (K == 0) return cudaSuccess;
  const int bm = detail::conv_fwd_tile_rows(v, g);
  if (bm < 1 || S < 1 || M % S != 0 || (S > 1 && (M / S) % bm != 0)) return cudaErrorInvalidValue;
  const int tiles = static_cast<int>((M + bm - 1) / bm);
  if (tiles == 0) return detail::conv_stats_finalize(nullptr, 0, K, S, f.sums, stream);
  return cuda_common::with_stream_workspace<float>(
      static_cast<size_t>(tiles) * 2 * static_cast<size_t>(K), stream, [&](float* partials) {
        ep.stats = partials;
        const cudaError_t err = run<T>(v, ConvPass::Fwd, g, x, w, y, ep, stream);
        if (err != cudaSuccess) return err;
        return detail::conv_stats_finalize(partials, tiles, K, S, f.sums, stream);
      });
}

template <typename T>
cudaError_t conv2d_bwd_data_native(ConvVariant v, const Conv2dGeom& g, const T* dy, const T* w,
                                   T* dx, cudaStream_t stream) {
  return run<T>(v, ConvPass::Dgrad, g, dy, w, dx, ConvFwdEpilogue{}, stream);
}

template <typename T>
cudaError_t conv2d_bwd_filter_native(ConvVariant v, const Conv2dGeom& g, const T* x, const T* dy,
                                     T* dw, cudaStream_t stream) {
  return run<T>(v, ConvPass::Wgrad, g, dy, x, dw, ConvFwdEpilogue{}, stream);
}

#define RZ_INSTANTIATE_CONV_NATIVE(T)                                                             \
  template cudaError_t conv2d_fwd_native<T>(ConvVariant, const Conv2dGeom&, const T*, const T*,   \
                                            T*, cudaStream_t);                                    \
  template cudaError_t conv2d_fwd_native_fused<T>(ConvVariant, const Conv2dGeom&, const T*,       \
                                                  const T*, T*, const ConvFwdFusion&,             \
                                                  cudaStream_t);                                  \
  template cudaError_t conv2d_bwd_data_native<T>(ConvVariant, const Conv2dGeom&, const T*,        \
                                                 const T*, T*, cudaStream_t);                     \
  template cudaError_t conv2d_bwd_filter_native<T>(ConvVariant, const Conv2dGeom&, const T*,      \
                                                   const T*, T*, cudaStream_t);                   \
  template bool conv2d_native_supported<T>(ConvVariant, ConvPass, const Conv2dGeom&);             \
  template cudaError_t detail::conv_native_v1<T>(ConvPass, const Conv2dGeom&, const T*, const T*, \
                                                 T*, const ConvFwdEpilogue&, cudaStream_t);       \
  template cudaError_t detail::splitk_reduce<T>(const float*, int, int64_t, T*, cudaStream_t);
RZ_INSTANTIATE_CONV_NATIVE(float)
RZ_INSTANTIATE_CONV_NATIVE(bf16)

}  // namespace rz
