// CPU GEMM, GotoBLAS/BLIS structure.
//
// Loop nest (outermost first), with where each operand lives while it is reused:
//   jc  over N in blocks of NC   B block  KC x NC   packed once per (jc, pc) (L3)
//   pc  over K in blocks of KC   beta applies on the first K block only, then C += ...
//   ic  over M in blocks of MC   A block  MC x KC   packed per thread (L2, 1 MiB/core)
//   jr  over NC in panels of NR  B panel  KC x NR   reused by MC/MR micro-tiles (L2)
//   ir  over MC in panels of MR  A panel  MR x KC   reused by every B panel (L2)
//   micro-kernel: an MR x NR tile of C held in registers for the whole K block.
//
// Memory traffic (float, AVX-512: MR = 14, NR = 32, KC = 1024): each k step of the
// micro-kernel does 28 zmm FMAs (896 flops, 28 cycles on Zen 4's double-pumped FMA
// pipes) for 2 aligned 64-byte loads of B and 14 broadcasts of A (56 bytes): ~6.6
// bytes/cycle, all from L1/L2. The C tile (14 x 128 bytes) is read and written once per
// K block, i.e. once per 1024 k steps, and prefetched before the K loop. A is read from
// memory once per NC columns, B once per call. Packing costs O(MK + KN) per (jc, pc),
// uses in-register 16 x 16 transposes where the source is k-contiguous, and pads edge
// panels with zeros, so the micro-kernel never branches inside its K loop; partial C
// tiles are staged through a small aligned buffer.
//
// Threads: the MR-row panels of M are split among tm threads and the NR-column panels
// of each NC block among tn threads (tm * tn = thread count, chosen to balance tiles
// against packing). Each thread packs its own A block; the B block is shared when
// tm > 1 and private otherwise. Every C element is owned by exactly one thread and
// summed in k order with a fixed blocking, so the result is bitwise independent of the
// thread count.
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/scratch.h"
#include "kernels/common/conv_epilogue.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// GCC 12 flags the deliberately undefined registers inside the AVX-512 shuffle
// intrinsics as maybe-uninitialized (GCC bug 105593); the warning is about the header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace rz {
namespace {

// ---- Vector types: one register of W lanes and the handful of operations we need. ----

#if defined(__AVX512F__)
struct VecF32 {
  using T = float;
  using R = __m512;
  static constexpr int W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_load_ps(p); }
  static R loadu(const T* p) { return _mm512_loadu_ps(p); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static void storeu(T* p, R v) { _mm512_storeu_ps(p, v); }
};
struct VecF64 {
  using T = double;
  using R = __m512d;
  static constexpr int W = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_load_pd(p); }
  static R loadu(const T* p) { return _mm512_loadu_pd(p); }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static void storeu(T* p, R v) { _mm512_storeu_pd(p, v); }
};
// 32 zmm registers: MR x NV accumulators + NV B vectors + 1 broadcast A must fit.
constexpr int kMrF32 = 14, kNvF32 = 2;  // 14 x 32 tile, 28 accumulators
constexpr int kMrF64 = 14, kNvF64 = 2;  // 14 x 16 tile
#elif defined(__AVX2__) && defined(__FMA__)
struct VecF32 {
  using T = float;
  using R = __m256;
  static constexpr int W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_load_ps(p); }
  static R loadu(const T* p) { return _mm256_loadu_ps(p); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static void storeu(T* p, R v) { _mm256_storeu_ps(p, v); }
};
struct VecF64 {
  using T = double;
  using R = __m256d;
  static constexpr int W = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_load_pd(p); }
  static R loadu(const T* p) { return _mm256_loadu_pd(p); }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static void storeu(T* p, R v) { _mm256_storeu_pd(p, v); }
};
// 16 ymm registers: 6 x 2 accumulators + 2 B + 1 A.
constexpr int kMrF32 = 6, kNvF32 = 2;
constexpr int kMrF64 = 6, kNvF64 = 2;
#else
// Portable fallback: "vectors" of one lane; the compiler may still auto-vectorize.
template <typename TT>
struct VecScalar {
  using T = TT;
  using R = TT;
  static constexpr int W = 1;
  static R zero() { return R(0); }
  static R load(const T* p) { return *p; }
  static R loadu(const T* p) { return *p; }
  static R set1(T x) { return x; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R mul(R a, R b) { return a * b; }
  static void storeu(T* p, R v) { *p = v; }
};
using VecF32 = VecScalar<float>;
using VecF64 = VecScalar<double>;
constexpr int kMrF32 = 4, kNvF32 = 4;
constexpr int kMrF64 = 4, kNvF64 = 4;
#endif

// Blocking per element type (float numbers measured on Zen 4, 1024^3, one core: KC 256
// -> 82% of peak, 512 -> 88%, 1024 -> 90%). The B panel (KC x NR, 128 KiB for float)
// and the A block (MC x KC, 224 KiB) both live in the 1 MiB L2, which feeds the ~6.6
// bytes/cycle the micro-kernel needs with room to spare; L1 does not have to hold the B
// panel. A long KC pays instead for the C tile: it is read and written once per K block
// and usually comes from L3 or memory. NC x KC (the B block, 8 MiB) sits in L3.
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
  using V = VecF32;
  static constexpr int MR = kMrF32, NV = kNvF32, NR = NV * V::W;
  static constexpr int64_t KC = 1024, MC = MR * 4, NC = 2048;
  // Row stride of a row-major A panel: KC plus one cache line, so that the MR rows a
  // micro-kernel step reads fall in different L1 sets (a 4 KiB stride would put all 14
  // in one set of a 12-way L1).
  static constexpr int RS = int(KC) + 16;
};
template <>
struct Blocking<double> {
  using V = VecF64;
  static constexpr int MR = kMrF64, NV = kNvF64, NR = NV * V::W;
  static constexpr int64_t KC = 512, MC = MR * 4, NC = 2048;
  static constexpr int RS = int(KC) + 8;
};

constexpr std::size_t kAlign = 64;

// The calling thread's workspace, holding every thread's packing buffers: allocated
// (and possibly throwing) before the parallel region, reused by later calls.
template <typename T>
Scratch<T>& workspace() {
  struct GemmPacking {};
  return thread_scratch<T, GemmPacking>();
}

// ---- Packing ----
//
// Both operands are packed into k-major panels of width P (P = MR for A, NR for B):
// dst[k*P + r] = element (row r of the panel, k); rows >= `rows` are zero so the
// micro-kernel always runs full tiles. Depending on the transposes, the source panel
// is either already k-major (pack_copy: op(A) with trans_a, op(B) without trans_b) or
// r-major with k contiguous (pack_transpose: op(A) without trans_a, op(B) with trans_b).

// src[k*ld + r] for r < rows.
template <typename T, int P>
void pack_copy(const T* src, int64_t ld, int rows, int64_t kc, T* __restrict dst) {
  for (int64_t k = 0; k < kc; ++k, dst += P) {
    const T* s = src + k * ld;
    if (rows == P) {
      std::memcpy(dst, s, P * sizeof(T));
    } else {
      std::memcpy(dst, s, std::size_t(rows) * sizeof(T));
      std::fill(dst + rows, dst + P, T(0));
    }
  }
}

// src[r*ld + k] for r < rows. Portable version: blocks of 16 k keep the rows' read
// streams and the 16 destination lines resident in L1.
template <typename T, int P>
void pack_transpose_generic(const T* src, int64_t ld, int rows, int64_t kc, T* __restrict dst) {
  for (int64_t k0 = 0; k0 < kc; k0 += 16) {
    const int64_t kn = std::min<int64_t>(16, kc - k0);
    for (int r = 0; r < rows; ++r) {
      const T* s = src + r * ld + k0;
      for (int64_t k = 0; k < kn; ++k) dst[(k0 + k) * P + r] = s[k];
    }
    for (int r = rows; r < P; ++r) {
      for (int64_t k = 0; k < kn; ++k) dst[(k0 + k) * P + r] = T(0);
    }
  }
}

#if defined(__AVX512F__)
// 16 x 16 float transpose in registers (the pattern of the AVX-512 reference
// transposes: 32-bit, 64-bit, then 128-bit lane interleaves).
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
}

// Float: 16 rows x 16 k per register transpose; masked loads cover the k tail and
// masked stores write the (possibly partial, e.g. 14 of 16) rows of each k.
template <int P>
void pack_transpose_f32(const float* src, int64_t ld, int rows, int64_t kc, float* __restrict dst) {
  for (int r0 = 0; r0 < P; r0 += 16) {
    const int width = std::min(16, P - r0);
    const __mmask16 store_mask = __mmask16((1u << width) - 1u);
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int kn = int(std::min<int64_t>(16, kc - k0));
      const __mmask16 load_mask = __mmask16((1u << kn) - 1u);
      __m512 v[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        v[i] = r0 + i < rows ? _mm512_maskz_loadu_ps(load_mask, src + (r0 + i) * ld + k0)
                             : _mm512_setzero_ps();
      }
      transpose16(v);
      for (int k = 0; k < kn; ++k) _mm512_mask_storeu_ps(dst + (k0 + k) * P + r0, store_mask, v[k]);
    }
  }
}
#endif

template <typename T, int P>
void pack_transpose(const T* src, int64_t ld, int rows, int64_t kc, T* __restrict dst) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    pack_transpose_f32<P>(src, ld, rows, kc, dst);
    return;
  }
#endif
  pack_transpose_generic<T, P>(src, ld, rows, kc, dst);
}

// Panel of MR rows [i0, i0+mr) of op(A), k in [k0, k0+kc). With trans_a the source
// is k-major already and is copied into a k-major panel (element (r, k) at ap[k*MR +
// r]). Without it, op(A) rows are k-contiguous (activations in NHWC): they are copied
// row by row, with no transpose, into a row-major panel of fixed row stride RS
// (element (r, k) at ap[r*RS + k]), or written there by the row source of an implicit
// GEMM; the micro-kernel then broadcasts each row's k-th element at a constant
// displacement from one pointer. Rows mr..MR-1 are zero.
template <typename T, int MR, int RS>
void pack_a_panel(bool trans_a, const T* A, int64_t lda, const GemmRowSource<T>* rows, int64_t i0,
                  int mr, int64_t k0, int64_t kc, T* ap) {
  if (trans_a) {
    pack_copy<T, MR>(A + k0 * lda + i0, lda, mr, kc, ap);
    return;
  }
  for (int r = 0; r < mr; ++r) {
    if (rows != nullptr) {
      rows->fill(rows->ctx, i0 + r, k0, kc, ap + r * RS);
    } else {
      std::memcpy(ap + r * RS, A + (i0 + r) * lda + k0, std::size_t(kc) * sizeof(T));
    }
  }
  for (int r = mr; r < MR; ++r) std::fill(ap + r * RS, ap + r * RS + kc, T(0));
}

// Panel of NR columns [j0, j0+nr) of op(B), k in [k0, k0+kc).
template <typename T, int NR>
void pack_b_panel(bool trans_b, const T* B, int64_t ldb, int64_t j0, int nr, int64_t k0, int64_t kc,
                  T* bp) {
  if (trans_b) {
    pack_transpose<T, NR>(B + j0 * ldb + k0, ldb, nr, kc, bp);
  } else {
    pack_copy<T, NR>(B + k0 * ldb + j0, ldb, nr, kc, bp);
  }
}

// ---- Micro-kernel ----

// acc = (ROWS x kc slice of the packed A panel, element (i, k) at ap[i*RS + k*KS]) *
// (kc x NR packed B panel); then C = alpha*acc + beta*C on the mr x nr corner of the
// tile (beta == 0: C is not read). Both strides are compile-time constants, so every
// broadcast of A is one instruction at a fixed displacement (k-major panel: RS = 1,
// KS = MR; row-major panel: RS = the panel's row stride, KS = 1). ROWS < MR runs the
// last, partly empty A panel of an M range with fewer FMAs (M = 128 = 9*14 + 2 would
// otherwise waste 9% of the work).
template <typename V, int ROWS, int NV, int RS, int KS>
void micro_kernel(int64_t kc, const typename V::T* __restrict ap,
                  const typename V::T* __restrict bp, typename V::T* c, int64_t ldc, int mr, int nr,
                  typename V::T alpha, typename V::T beta) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr int NR = NV * W;

  // The C tile is touched only after the K loop; start fetching it now so its lines
  // (often in L3 or memory: C is usually larger than L2) arrive during the FMAs.
  for (int i = 0; i < mr; ++i) {
    const char* row = reinterpret_cast<const char*>(c + i * ldc);
    for (int j = 0; j < NR * int(sizeof(T)); j += 64) __builtin_prefetch(row + j, 1, 3);
  }

  R acc[ROWS][NV];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  }

  for (int64_t k = 0; k < kc; ++k) {
    R b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = V::load(bp + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const R a = V::set1(ap[i * RS]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(a, b[v], acc[i][v]);
    }
    ap += KS;
    bp += NR;
  }

  // Partial tiles go through an aligned staging tile so that they get exactly the same
  // arithmetic as full tiles.
  const bool full = mr == ROWS && nr == NR;
  alignas(kAlign) T stage[ROWS * NR];
  T* dst = c;
  int64_t ld = ldc;
  if (!full) {
    dst = stage;
    ld = NR;
    std::fill(stage, stage + ROWS * NR, T(0));
    if (beta != T(0)) {
      for (int i = 0; i < mr; ++i) std::memcpy(stage + i * NR, c + i * ldc, nr * sizeof(T));
    }
  }
  const R va = V::set1(alpha);
  if (beta == T(0)) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) V::storeu(dst + i * ld + v * W, V::mul(va, acc[i][v]));
    }
  } else if (beta == T(1)) {
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* p = dst + i * ld + v * W;
        V::storeu(p, V::fma(va, acc[i][v], V::loadu(p)));
      }
    }
  } else {
    const R vb = V::set1(beta);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* p = dst + i * ld + v * W;
        V::storeu(p, V::fma(va, acc[i][v], V::mul(vb, V::loadu(p))));
      }
    }
  }
  if (!full) {
    for (int i = 0; i < mr; ++i) std::memcpy(c + i * ldc, stage + i * NR, nr * sizeof(T));
  }
}

// Picks the narrowest of three row kernels (4, 8, 14 rows for MR = 14) covering mr.
template <typename V, int MR, int NV, int RS, int KS>
void run_tile(int64_t kc, const typename V::T* ap, const typename V::T* bp, typename V::T* c,
              int64_t ldc, int mr, int nr, typename V::T alpha, typename V::T beta) {
  constexpr int kQuarter = (MR + 3) / 4, kHalf = std::min(MR, MR / 2 + 1);
  if (mr <= kQuarter) {
    micro_kernel<V, kQuarter, NV, RS, KS>(kc, ap, bp, c, ldc, mr, nr, alpha, beta);
  } else if (mr <= kHalf) {
    micro_kernel<V, kHalf, NV, RS, KS>(kc, ap, bp, c, ldc, mr, nr, alpha, beta);
  } else {
    micro_kernel<V, MR, NV, RS, KS>(kc, ap, bp, c, ldc, mr, nr, alpha, beta);
  }
}

// ---- Driver ----

template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  if (beta == T(1)) return;
  for (int64_t i = 0; i < M; ++i) {
    T* row = C + i * ldc;
    if (beta == T(0)) {
      std::fill(row, row + N, T(0));
    } else {
      for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Splits [0, n) into `parts` near-equal contiguous ranges; returns the start of `part`.
inline int64_t split_at(int64_t n, int64_t parts, int64_t part) {
  return n * part / parts;
}

}  // namespace

// C[r][j] for r0 <= r < r1, j0 <= j < j1: the epilogue of gemm.h.
template <typename T>
void apply_epilogue(const GemmEpilogue<T>& ep, T* C, int64_t ldc, int64_t r0, int64_t r1, int64_t j0,
                    int64_t j1) {
  for (int64_t r = r0; r < r1; ++r) {
    T* row = C + r * ldc;
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) row[j] = conv_epilogue_value(row[j], ep.col_scale, ep.col_shift, ep.relu, j);
  }
}

namespace {

// gemm_cpu and gemm_cpu_rows: A is either a matrix (rows == nullptr) or, with
// !trans_a, the row source of an implicit GEMM.
template <typename T>
void gemm_driver(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const GemmRowSource<T>* rows, const T* B, int64_t ldb, T beta, T* C,
                 int64_t ldc, const GemmEpilogue<T>* epilogue) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    if (epilogue != nullptr) apply_epilogue(*epilogue, C, ldc, 0, M, 0, N);
    return;
  }

  using Blk = Blocking<T>;
  using V = typename Blk::V;
  constexpr int MR = Blk::MR, NR = Blk::NR;
  constexpr int64_t MC = Blk::MC, NC = Blk::NC;

  // Equal K blocks no larger than KC: no tiny remainder block paying a full C pass.
  const int64_t k_blocks = ceil_div(K, Blk::KC);
  const int64_t KC = ceil_div(K, k_blocks);

  const int64_t m_panels = ceil_div(M, MR);
  const int64_t n_panels = ceil_div(N, NR);

  // Threads: at most one per C tile, and roughly >= 4 MFLOP each so that fork/join and
  // packing stay small next to the math.
  const double flops = 2.0 * double(M) * double(N) * double(K);
  int64_t nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  nt = std::min<int64_t>(nt, std::max<int64_t>(1, int64_t(flops / 4e6)));
  nt = std::max<int64_t>(1, std::min(nt, m_panels * n_panels));

  // tm x tn thread grid. Cost per k step of the busiest thread: its C tiles (MR*NR
  // multiply-adds each) plus its packed/streamed rows of A and columns of B (~8
  // multiply-adds' worth of time per element: a load, a store, cache misses). Small M
  // (late layers) thus splits N, tall-skinny im2col GEMMs split M.
  int64_t tm = 1, tn = nt;
  double best = -1.0;
  for (int64_t cand = 1; cand <= nt; ++cand) {
    if (nt % cand != 0) continue;
    const int64_t mp = ceil_div(m_panels, cand);
    const int64_t np = ceil_div(std::min(n_panels, NC / NR), nt / cand);
    const double cost = double(mp * np) * MR * NR + 8.0 * double(mp * MR + np * NR);
    if (best < 0.0 || cost <= best) {
      best = cost;
      tm = cand;
      tn = nt / cand;
    }
  }

  // With tm > 1 the B block is shared (packed by all, read by all, barriers around it);
  // with tm == 1 every thread packs and reads only its own panels, in its own buffer,
  // so threads never wait for each other. Region sizes are multiples of 64 bytes so
  // every B panel stays aligned for the micro-kernel's aligned loads.
  const int64_t block_panels = ceil_div(std::min(NC, N), NR);
  const int64_t per_line = int64_t(kAlign / sizeof(T));
  // A panels: k-major (MR x kc) with trans_a, row-major with row stride Blk::RS without.
  const int64_t a_panel = trans_a ? KC * MR : MR * Blk::RS;
  const int64_t a_size = ceil_div(a_panel * (MC / MR), per_line) * per_line;
  const int64_t b_size = tm > 1 ? KC * block_panels * NR : KC * ceil_div(block_panels, tn) * NR;
  const int64_t b_regions = tm > 1 ? 1 : nt;
  T* const work = workspace<T>().get(std::size_t(b_regions * b_size + nt * a_size));

#pragma omp parallel num_threads(int(nt)) if (nt > 1)
  {
    const int64_t tid = omp_get_thread_num();
    const int64_t im = tid / tn, in = tid % tn;
    const int64_t m0 = std::min(M, split_at(m_panels, tm, im) * MR);
    const int64_t m1 = std::min(M, split_at(m_panels, tm, im + 1) * MR);
    T* const bbuf = work + (tm > 1 ? 0 : tid * b_size);
    T* const abuf = work + b_regions * b_size + tid * a_size;

    for (int64_t jc = 0; jc < N; jc += NC) {
      const int64_t nc = std::min(NC, N - jc);
      const int64_t np = ceil_div(nc, NR);
      const int64_t q0 = split_at(np, tn, in), q1 = split_at(np, tn, in + 1);
      const int64_t qbase = tm > 1 ? 0 : q0;  // panel q lives at bbuf + (q - qbase)*KC*NR

      for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = std::min(KC, K - pc);
        // The tm threads that will read panels [q0, q1) pack them.
        for (int64_t q = q0 + split_at(q1 - q0, tm, im); q < q0 + split_at(q1 - q0, tm, im + 1);
             ++q) {
          const int nr = int(std::min<int64_t>(NR, nc - q * NR));
          pack_b_panel<T, NR>(trans_b, B, ldb, jc + q * NR, nr, pc, kc,
                              bbuf + (q - qbase) * KC * NR);
        }
        if (tm > 1) {
#pragma omp barrier
        }
        const T beta_k = pc == 0 ? beta : T(1);
        for (int64_t ic = m0; ic < m1; ic += MC) {
          const int64_t mc = std::min(MC, m1 - ic);
          const int64_t mp = ceil_div(mc, MR);
          for (int64_t p = 0; p < mp; ++p) {
            const int mr = int(std::min<int64_t>(MR, mc - p * MR));
            pack_a_panel<T, MR, Blk::RS>(trans_a, A, lda, rows, ic + p * MR, mr, pc, kc, abuf + p * a_panel);
          }
          for (int64_t q = q0; q < q1; ++q) {
            const int nr = int(std::min<int64_t>(NR, nc - q * NR));
            for (int64_t p = 0; p < mp; ++p) {
              const int mr = int(std::min<int64_t>(MR, mc - p * MR));
              const T* ap = abuf + p * a_panel;
              const T* bp = bbuf + (q - qbase) * KC * NR;
              T* cp = C + (ic + p * MR) * ldc + jc + q * NR;
              if (trans_a) {
                run_tile<V, MR, Blk::NV, 1, MR>(kc, ap, bp, cp, ldc, mr, nr, alpha, beta_k);
              } else {
                run_tile<V, MR, Blk::NV, Blk::RS, 1>(kc, ap, bp, cp, ldc, mr, nr, alpha, beta_k);
              }
              if (epilogue != nullptr && pc + kc >= K)
                apply_epilogue(*epilogue, C, ldc, ic + p * MR, ic + p * MR + mr, jc + q * NR, jc + q * NR + nr);
            }
          }
        }
        // The B block is repacked next iteration: nobody may still be reading it.
        if (tm > 1) {
#pragma omp barrier
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm_cpu(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
              const GemmEpilogue<T>* epilogue) {
  gemm_driver<T>(trans_a, trans_b, M, N, K, alpha, A, lda, nullptr, B, ldb, beta, C, ldc, epilogue);
}

template <typename T>
void gemm_cpu_rows(const GemmRowSource<T>& a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const GemmEpilogue<T>* epilogue) {
  gemm_driver<T>(false, trans_b, M, N, K, alpha, nullptr, 0, &a, B, ldb, beta, C, ldc, epilogue);
}

template void gemm_cpu<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                              const float*, int64_t, float, float*, int64_t, const GemmEpilogue<float>*);
template void gemm_cpu<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                               int64_t, const double*, int64_t, double, double*, int64_t,
                               const GemmEpilogue<double>*);

template void gemm_cpu_rows<float>(const GemmRowSource<float>&, bool, int64_t, int64_t, int64_t, float,
                                   const float*, int64_t, float, float*, int64_t, const GemmEpilogue<float>*);
template void gemm_cpu_rows<double>(const GemmRowSource<double>&, bool, int64_t, int64_t, int64_t, double,
                                    const double*, int64_t, double, double*, int64_t,
                                    const GemmEpilogue<double>*);

}  // namespace rz
