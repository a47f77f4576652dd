// CPU general matrix multiply: the engine of every CPU convolution (im2col + GEMM)
// and linear layer. A BLIS/GotoBLAS-style kernel: packed, cache-blocked panels and a
// register-blocked AVX-512 (or AVX2, or portable) micro-kernel; see gemm.cpp for the
// blocking and its memory-traffic budget.
#pragma once

#include <cstdint>

namespace rz {

// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, every matrix row-major.
//   op(A) = A   (A is M x K, row stride lda >= K)  when !trans_a
//         = A^T (A is stored K x M, lda >= M)       when  trans_a
//   op(B) = B   (B is K x N, ldb >= N)              when !trans_b
//         = B^T (B is stored N x K, ldb >= K)       when  trans_b
//   C is M x N with ldc >= N.
// beta == 0 overwrites C without reading it (NaN or Inf already in C never propagates);
// alpha == 0 or K == 0 only scales C by beta. M or N == 0 does nothing.
// Parallel over the OpenMP threads (omp_get_max_threads()); small problems run on
// fewer, and a call made inside a parallel region runs on the calling thread only.
// Packing buffers are grow-only and thread-local to the caller: steady-state calls
// allocate nothing. Deterministic: every C element is summed over K in the same order
// by one thread, so the result does not depend on the thread count or on scheduling.
// A, B must not alias C. Sizes must be >= 0 (not checked: kernels/ throws nothing).
//
// An epilogue, when given, finishes each C tile right after its last K block,
// while the tile is still in cache: per column j, C = C * col_scale[j] +
// col_shift[j] (both set, or neither), then max(C, 0) when relu
// (conv_epilogue_value, the GPU epilogues' math). A convolution followed by
// an eval-mode BN and ReLU thus makes one pass over its output instead of three.
template <typename T>
struct GemmEpilogue {
  const T* col_scale = nullptr;
  const T* col_shift = nullptr;
  bool relu = false;
};

template <typename T>
void gemm_cpu(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
              const GemmEpilogue<T>* epilogue = nullptr);

// Implicit GEMM: C = alpha * A * op(B) + beta * C with A (M x K, no transpose) never
// stored; fill(ctx, row, k0, kc, dst) writes elements [k0, k0 + kc) of A's row `row` to
// dst when the GEMM packs that row. A convolution passes its im2col here, so the
// expanded input lives only in the packing buffer (L2) and never goes to memory.
// fill is called from the GEMM's threads concurrently, for disjoint rows; it must
// write all kc elements. Same results, bit for bit, as gemm_cpu on the stored A.
template <typename T>
struct GemmRowSource {
  void (*fill)(const void* ctx, int64_t row, int64_t k0, int64_t kc, T* dst) = nullptr;
  const void* ctx = nullptr;
};

template <typename T>
void gemm_cpu_rows(const GemmRowSource<T>& a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
                   const GemmEpilogue<T>* epilogue = nullptr);

extern template void gemm_cpu<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                     int64_t, const float*, int64_t, float, float*, int64_t,
                                     const GemmEpilogue<float>*);
extern template void gemm_cpu<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                      int64_t, const double*, int64_t, double, double*, int64_t,
                                      const GemmEpilogue<double>*);
extern template void gemm_cpu_rows<float>(const GemmRowSource<float>&, bool, int64_t, int64_t, int64_t,
                                          float, const float*, int64_t, float, float*, int64_t,
                                          const GemmEpilogue<float>*);
extern template void gemm_cpu_rows<double>(const GemmRowSource<double>&, bool, int64_t, int64_t,
                                           int64_t, double, const double*, int64_t, double, double*,
                                           int64_t, const GemmEpilogue<double>*);

}  // namespace rz
