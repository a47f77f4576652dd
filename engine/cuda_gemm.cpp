#include "engine/cuda_gemm.h"

#include <algorithm>
#include <climits>

#include "engine/error.h"

namespace rz {

#if defined(RZ_HAVE_CUDA)

namespace {
cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: break;
  }
  RZ_THROW("gemm_cublas: unsupported dtype ", dtype_name(t), " (expected f32 or bf16)");
}

int to_int(int64_t v, const char* what) {
  RZ_CHECK(v >= 0 && v <= INT_MAX, "gemm_cublas: ", what, " = ", v, " must be in [0, INT_MAX]");
  return static_cast<int>(v);
}
}  // namespace

void gemm_cublas(CudaContext& ctx, DType in, DType out, bool trans_a, bool trans_b, int64_t M,
                 int64_t N, int64_t K, float alpha, const void* A, int64_t lda, const void* B,
                 int64_t ldb, float beta, void* C, int64_t ldc, const CublasGemmOptions& opt) {
  RZ_CHECK(in == DType::F32 || in == DType::BF16, "gemm_cublas: input dtype ", dtype_name(in),
           " (expected f32 or bf16)");
  RZ_CHECK(out == DType::F32 || (in == DType::BF16 && out == DType::BF16), "gemm_cublas: output dtype ",
           dtype_name(out), " with input ", dtype_name(in), " (expected f32, or bf16 from bf16)");
  const int m = to_int(M, "M"), n = to_int(N, "N"), k = to_int(K, "K");
  RZ_CHECK(lda >= (trans_a ? M : K), "gemm_cublas: lda = ", lda, " too small");
  RZ_CHECK(ldb >= (trans_b ? K : N), "gemm_cublas: ldb = ", ldb, " too small");
  RZ_CHECK(ldc >= N, "gemm_cublas: ldc = ", ldc, " < N = ", N);
  if (m == 0 || n == 0) return;
  NvtxRange range("gemm_cublas");
  ctx.make_current();
  // cuBLAS wants every leading dimension >= 1 even where the matrix is empty (K == 0).
  const int ia = to_int(std::max<int64_t>(lda, 1), "lda");
  const int ib = to_int(std::max<int64_t>(ldb, 1), "ldb");
  const int ic = to_int(std::max<int64_t>(ldc, 1), "ldc");
  const cublasComputeType_t compute =
      (in == DType::F32 && opt.allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // Column-major C^T[N,M] = op(B)^T[N,K] op(A)^T[K,M]: the row-major B is the
  // column-major B^T, so B goes first with its own transpose flag, then A.
  RZ_CUBLAS_CHECK(cublasGemmEx(ctx.cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                               trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B, cuda_type(in),
                               ib, A, cuda_type(in), ia, &beta, C, cuda_type(out), ic, compute,
                               CUBLAS_GEMM_DEFAULT));
}

#else  // !RZ_HAVE_CUDA

void gemm_cublas(CudaContext&, DType, DType, bool, bool, int64_t, int64_t, int64_t, float,
                 const void*, int64_t, const void*, int64_t, float, void*, int64_t,
                 const CublasGemmOptions&) {
  RZ_THROW("gemm_cublas: built without CUDA");
}

#endif

}  // namespace rz
