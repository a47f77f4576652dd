// Fully connected layer on the CPU: y[N, out] = x[N, in] w[out, in]^T + b[out]
// (PyTorch's nn.Linear layout), as GEMMs.
#pragma once

#include <cstdint>

namespace rz {

// Writes y. b may be nullptr (no bias).
template <typename T>
void linear_fwd_cpu(const T* x, const T* w, const T* b, T* y, int64_t N, int64_t in, int64_t out);

// Writes each non-null output: dx[N, in] = dy w; dw[out, in] = dy^T x;
// db[out] = column sums of dy (in double). x is needed only for dw, w only for dx.
template <typename T>
void linear_bwd_cpu(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int64_t N,
                    int64_t in, int64_t out);

}  // namespace rz
