// Row-major GEMM through cuBLAS, with the meaning of rz::gemm_cpu
// (kernels/cpu/gemm.h):
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, every matrix row-major,
//   op(A) = A (M x K, lda >= K) or A^T (A stored K x M, lda >= M), likewise B
//   (K x N, ldb >= N; or stored N x K, ldb >= K); C is M x N, ldc >= N.
// beta == 0 overwrites C without reading it. M or N == 0 does nothing.
//
// A row-major matrix is its transpose in column-major, so this computes the
// column-major C^T = op(B)^T op(A)^T with cublasGemmEx (operands swapped).
// Types: `in` is the type of A and B (F32 or BF16), `out` the type of C (F32,
// or BF16 when in is BF16). Products are accumulated in fp32
// (CUBLAS_COMPUTE_32F); alpha and beta are fp32. With in == F32, TF32 tensor
// cores are used only when allow_tf32 (CUBLAS_COMPUTE_32F_FAST_TF32).
// Device pointers; asynchronous on ctx.stream(). Sizes must fit in int (checked).
#pragma once

#include <cstdint>

#include "engine/cuda_context.h"
#include "engine/dtype.h"

namespace rz {

struct CublasGemmOptions {
  bool allow_tf32 = false;
};

void gemm_cublas(CudaContext& ctx, DType in, DType out, bool trans_a, bool trans_b, int64_t M,
                 int64_t N, int64_t K, float alpha, const void* A, int64_t lda, const void* B,
                 int64_t ldb, float beta, void* C, int64_t ldc, const CublasGemmOptions& opt = {});

}  // namespace rz
