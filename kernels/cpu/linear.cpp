// Memory traffic: dominated by the GEMMs (see gemm.h); the bias broadcast and
// the bias-gradient column sums touch N*out elements once.
#include "kernels/cpu/linear.h"

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/reduce.h"

namespace rz {

template <typename T>
void linear_fwd_cpu(const T* x, const T* w, const T* b, T* y, int64_t N, int64_t in, int64_t out) {
  if (b != nullptr) {
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] = b[j];
  }
  gemm_cpu<T>(false, true, N, out, in, T(1), x, in, w, in, b != nullptr ? T(1) : T(0), y, out);
}

template <typename T>
void linear_bwd_cpu(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t N,
                    int64_t in, int64_t out) {
  if (dx != nullptr) gemm_cpu<T>(false, false, N, in, out, T(1), dy, out, w, in, T(0), dx, in);
  if (dw != nullptr) gemm_cpu<T>(true, false, out, in, N, T(1), dy, out, x, in, T(0), dw, in);
  if (db != nullptr) col_sum_cpu(dy, N, out, db);
}

template void linear_fwd_cpu<float>(const float*, const float*, const float*, float*, int64_t,
                                    int64_t, int64_t);
template void linear_fwd_cpu<double>(const double*, const double*, const double*, double*,
                                     int64_t, int64_t, int64_t);
template void linear_bwd_cpu<float>(const float*, const float*, const float*, float*, float*,
                                    float*, int64_t, int64_t, int64_t);
template void linear_bwd_cpu<double>(const double*, const double*, const double*, double*,
                                     double*, double*, int64_t, int64_t, int64_t);

}  // namespace rz
