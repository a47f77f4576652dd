// CPU reference twins of the training losses. All buffers contiguous; losses
// are means, accumulated in double and returned as double.
#pragma once

#include <cstdint>

namespace rz {

// Mean over rows*L elements of BCE-with-logits (PyTorch BCEWithLogitsLoss,
// reduction='mean'); logits and targets are [rows, L], pos_weight is [L] or
// nullptr (all ones). Per element see bce_with_logits in
// kernels/common/loss_math.h (stable for any |logit|).
template <class T>
double bce_with_logits_fwd_cpu(const T* logits, const T* targets, const T* pos_weight, int64_t rows,
                               int64_t L);

// Writes (never adds) dlogits = dloss * d(mean loss) / dlogits.
template <class T>
void bce_with_logits_bwd_cpu(const T* logits, const T* targets, const T* pos_weight, T dloss,
                             T* dlogits, int64_t rows, int64_t L);

// mean over n of (a - b)^2.
template <class T>
double mse_fwd_cpu(const T* a, const T* b, int64_t n);

// Writes da = dloss * 2 (a - b) / n and db = -da; da or db may be nullptr.
template <class T>
void mse_bwd_cpu(const T* a, const T* b, T dloss, T* da, T* db, int64_t n);

}  // namespace rz
