// 2-D pooling and global average pooling on NHWC (v1: one thread per output
// element, grid-stride, 256 threads; c is the fastest index so a warp reads
// 32 consecutive channels of one pixel -- coalesced).
// Memory traffic (elements): max/avg forward read each input about
// (kh/sh)*(kw/sw) times (overlapping windows, mostly L1/L2 hits) and write y
// (+ int32 argmax for max); max backward reads dy and argmax about
// ceil(kh/sh)*ceil(kw/sw) times per dx element (gather) and writes dx once;
// avg backward likewise without argmax; global pool forward reads x once and
// writes N*C; global pool backward reads N*C and writes dx once.
// The window arithmetic (pool_window1d, pool_window_count) is
// kernels/common/pool_math.h, shared with the CPU twin kernels/cpu/pool.cpp.
#include "kernels/cuda/pool.cuh"

#include "kernels/common/pool_math.h"
#include "kernels/cuda/common.cuh"

namespace rz {

namespace {

using namespace cuda_common;

constexpr int kTileC = 32;
constexpr int kRowLanes = 8;  // kTileC * kRowLanes == kThreads; a power of two



__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

using Window1d = PoolWindow1d;

__device__ __forceinline__ Window1d window1d(int64_t o, int64_t k, int64_t s, int64_t p,
                                             int64_t in) {
  return pool_window1d(o, k, s, p, in);
}

__device__ __forceinline__ float avg_divisor(const Window1d& wh, const Window1d& ww,
                                             bool count_include_pad) {
  return static_cast<float>(pool_window_count(wh, ww, count_include_pad));
}

// First output whose window [o*s - p, o*s - p + k) contains input i.
__device__ __forceinline__ int64_t first_out(int64_t i, int64_t k, int64_t s, int64_t p) {
  const int64_t t = i + p - k;
  return t < 0 ? int64_t{0} : t / s + 1;
}

// Splits a flat NHWC index over [N, A, B, C] into its four coordinates.
struct Nabc {
  int64_t n, a, b, c;
};
__device__ __forceinline__ Nabc split_nabc(int64_t i, int64_t A, int64_t B, int64_t C) {
  Nabc r;
  r.c = i % C;
  int64_t t = i / C;
  r.b = t % B;
  t /= B;
  r.a = t % A;
  r.n = t / A;
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_fwd_kernel(const T* x, T* y, int32_t* argmax, Pool2dGeom g, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const Nabc o = split_nabc(i, g.OH, g.OW, g.C);
    const int64_t h0 = max64(o.a * g.sh - g.ph, 0), h1 = min64(o.a * g.sh - g.ph + g.kh, g.H);
    const int64_t w0 = max64(o.b * g.sw - g.pw, 0), w1 = min64(o.b * g.sw - g.pw + g.kw, g.W);
    const T* xn = x + o.n * g.H * g.W * g.C + o.c;
    // Start from -inf pointing at the first valid input, as the CPU twin does.
    float best = -INFINITY;
    int64_t arg = h0 * g.W + w0;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t w = w0; w < w1; ++w) {
        const float v = load_f32(xn[(h * g.W + w) * g.C]);
        if (v > best || isnan(v)) {
          best = v;
          arg = h * g.W + w;
        }
      }
    }
    y[i] = store_f32<T>(best);
    argmax[i] = static_cast<int32_t>(arg);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool2d_bwd_kernel(const T* dy, const int32_t* argmax, T* dx, Pool2dGeom g, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const Nabc p = split_nabc(i, g.H, g.W, g.C);
    const int64_t oh0 = first_out(p.a, g.kh, g.sh, g.ph);
    const int64_t oh1 = min64(g.OH - 1, (p.a + g.ph) / g.sh);
    const int64_t ow0 = first_out(p.b, g.kw, g.sw, g.pw);
    const int64_t ow1 = min64(g.OW - 1, (p.b + g.pw) / g.sw);
    const int64_t self = p.a * g.W + p.b;
    const int64_t base = p.n * g.OH * g.OW * g.C + p.c;
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t off = base + (oh * g.OW + ow) * g.C;
        if (argmax[off] == self) acc += load_f32(dy[off]);
      }
    }
    dx[i] = store_f32<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    avg_pool2d_fwd_kernel(const T* x, T* y, Pool2dGeom g, bool count_include_pad, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const Nabc o = split_nabc(i, g.OH, g.OW, g.C);
    const Window1d wh = window1d(o.a, g.kh, g.sh, g.ph, g.H);
    const Window1d ww = window1d(o.b, g.kw, g.sw, g.pw, g.W);
    const T* xn = x + o.n * g.H * g.W * g.C + o.c;
    float acc = 0.0f;
    for (int64_t h = wh.start; h < wh.end; ++h)
      for (int64_t w = ww.start; w < ww.end; ++w) acc += load_f32(xn[(h * g.W + w) * g.C]);
    y[i] = store_f32<T>(acc / avg_divisor(wh, ww, count_include_pad));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    avg_pool2d_bwd_kernel(const T* dy, T* dx, Pool2dGeom g, bool count_include_pad, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const Nabc p = split_nabc(i, g.H, g.W, g.C);
    const int64_t oh0 = first_out(p.a, g.kh, g.sh, g.ph);
    const int64_t oh1 = min64(g.OH - 1, (p.a + g.ph) / g.sh);
    const int64_t ow0 = first_out(p.b, g.kw, g.sw, g.pw);
    const int64_t ow1 = min64(g.OW - 1, (p.b + g.pw) / g.sw);
    const T* dyn = dy + p.n * g.OH * g.OW * g.C + p.c;
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      const Window1d wh = window1d(oh, g.kh, g.sh, g.ph, g.H);
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Window1d ww = window1d(ow, g.kw, g.sw, g.pw, g.W);
        const float inv = 1.0f / avg_divisor(wh, ww, count_include_pad);
        acc += load_f32(dyn[(oh * g.OW + ow) * g.C]) * inv;
      }
    }
    dx[i] = store_f32<T>(acc);
  }
}

// Block (kTileC, kRowLanes), grid (channel tiles, min(N, 65535)); see pool.cuh.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    global_avg_pool_fwd_kernel(const T* x, T* y, int64_t N, int64_t HW, int64_t C) {
  __shared__ float part[kRowLanes][kTileC];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileC + tx;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    float acc = 0.0f;
    if (c < C)
      for (int64_t hw = ty; hw < HW; hw += kRowLanes) acc += load_f32(x[(n * HW + hw) * C + c]);
    part[ty][tx] = acc;
    __syncthreads();
    for (int half = kRowLanes / 2; half > 0; half /= 2) {
      if (ty < half) part[ty][tx] += part[ty + half][tx];
      __syncthreads();
    }
    if (ty == 0 && c < C) y[n * C + c] = store_f32<T>(part[0][tx] / static_cast<float>(HW));
    __syncthreads();  // part is reused by the next image
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    global_avg_pool_bwd_kernel(const T* dy, T* dx, int64_t HW, int64_t C, int64_t total) {
  const int64_t hwc = HW * C;
  const float inv = 1.0f / static_cast<float>(HW);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    dx[i] = store_f32<T>(load_f32(dy[(i / hwc) * C + i % C]) * inv);
}

}  // namespace

template <typename T>
cudaError_t max_pool2d_fwd_cuda(const T* x, T* y, int32_t* argmax, const Pool2dGeom& g,
                                cudaStream_t stream) {
  const int64_t total = g.N * g.OH * g.OW * g.C;
  if (total <= 0) return cudaSuccess;
  max_pool2d_fwd_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(x, y, argmax, g, total);
  return cudaGetLastError();
}

template <typename T>
cudaError_t max_pool2d_bwd_cuda(const T* dy, const int32_t* argmax, T* dx, const Pool2dGeom& g,
                                cudaStream_t stream) {
  const int64_t total = g.N * g.H * g.W * g.C;
  if (total <= 0) return cudaSuccess;
  max_pool2d_bwd_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(dy, argmax, dx, g, total);
  return cudaGetLastError();
}

template <typename T>
cudaError_t avg_pool2d_fwd_cuda(const T* x, T* y, const Pool2dGeom& g, bool count_include_pad,
                                cudaStream_t stream) {
  const int64_t total = g.N * g.OH * g.OW * g.C;
  if (total <= 0) return cudaSuccess;
  avg_pool2d_fwd_kernel<T>
      <<<grid_for(total), kThreads, 0, stream>>>(x, y, g, count_include_pad, total);
  return cudaGetLastError();
}

template <typename T>
cudaError_t avg_pool2d_bwd_cuda(const T* dy, T* dx, const Pool2dGeom& g, bool count_include_pad,
                                cudaStream_t stream) {
  const int64_t total = g.N * g.H * g.W * g.C;
  if (total <= 0) return cudaSuccess;
  avg_pool2d_bwd_kernel<T>
      <<<grid_for(total), kThreads, 0, stream>>>(dy, dx, g, count_include_pad, total);
  return cudaGetLastError();
}

template <typename T>
cudaError_t global_avg_pool_fwd_cuda(const T* x, T* y, int64_t N, int64_t HW, int64_t C,
                                     cudaStream_t stream) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const dim3 block(kTileC, kRowLanes);
  const dim3 grid(static_cast<unsigned>((C + kTileC - 1) / kTileC),
                  static_cast<unsigned>(N < 65535 ? N : 65535));
  global_avg_pool_fwd_kernel<T><<<grid, block, 0, stream>>>(x, y, N, HW, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t global_avg_pool_bwd_cuda(const T* dy, T* dx, int64_t N, int64_t HW, int64_t C,
                                     cudaStream_t stream) {
  const int64_t total = N * HW * C;
  if (total <= 0) return cudaSuccess;
  global_avg_pool_bwd_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(dy, dx, HW, C, total);
  return cudaGetLastError();
}

#define RZ_INSTANTIATE(T)                                                                      \
  template cudaError_t max_pool2d_fwd_cuda<T>(const T*, T*, int32_t*, const Pool2dGeom&,       \
                                              cudaStream_t);                                   \
  template cudaError_t max_pool2d_bwd_cuda<T>(const T*, const int32_t*, T*, const Pool2dGeom&, \
                                              cudaStream_t);                                   \
  template cudaError_t avg_pool2d_fwd_cuda<T>(const T*, T*, const Pool2dGeom&, bool,           \
                                              cudaStream_t);                                   \
  template cudaError_t avg_pool2d_bwd_cuda<T>(const T*, T*, const Pool2dGeom&, bool,           \
                                              cudaStream_t);                                   \
  template cudaError_t global_avg_pool_fwd_cuda<T>(const T*, T*, int64_t, int64_t, int64_t,    \
                                                   cudaStream_t);                              \
  template cudaError_t global_avg_pool_bwd_cuda<T>(const T*, T*, int64_t, int64_t, int64_t,    \
                                                   cudaStream_t);
RZ_INSTANTIATE(float)
RZ_INSTANTIATE(bf16)
#undef RZ_INSTANTIATE

}  // namespace rz
