// Optimizer updates on raw arrays: the CPU twins of a fused CUDA optimizer.
// Each call updates n elements in place; param, grad and the state arrays are
// parallel arrays of length n (one flat parameter tensor, or a flat buffer of
// many). The per-element math lives in kernels/common/optim_math.h.
//
// Memory traffic per element: SGD reads p, g (+ buf) and writes p (+ buf):
// 3-5 words. Adam reads p, g, m, v and writes p, m, v: 7 words. Both are
// bandwidth-bound; the loops are element-parallel with no reductions.
//
// No validation here (callers check sizes, step >= 1, hyperparameter ranges).
#pragma once

#include <cstdint>

#include "kernels/common/optim_math.h"

namespace rz {

// torch.optim.SGD: d = grad + wd*param; with momentum,
//   buf = first_step ? d : momentum*buf + (1-dampening)*d,
//   d = nesterov ? d + momentum*buf : buf;
// then param -= lr*d. momentum_buf may be nullptr when h.momentum == 0.
// T is float or double.
template <typename T>
void sgd_step_cpu(T* param, const T* grad, T* momentum_buf, int64_t n, const SgdHyper& h,
                  bool first_step);

// torch.optim.Adam / AdamW (h.decoupled); step is the 1-based update count
// including this update (>= 1), which sets the bias corrections
// bc1 = 1 - beta1^step and bc2 = 1 - beta2^step:
//   Adam:  g = grad + wd*param.   AdamW: param *= 1 - lr*wd, g = grad.
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//   param -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
// m and v start at zero before step 1. T is float or double.
template <typename T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, int64_t n, const AdamHyper& h,
                   int64_t step);

// Weight EMA over n elements: ema[i] = ema_blend(ema[i], value[i], decay)
// (kernels/common/optim_math.h). T is float or double.
template <typename T>
void ema_blend_cpu(T* ema, const T* value, int64_t n, double decay);

}  // namespace rz
