// Optimizer update math shared by the CPU twins (kernels/cpu/optim.cpp) and a
// future fused CUDA optimizer, so both run the same per-element arithmetic.
//
// Split: the step-dependent scalars (bias corrections, decay factors) are
// computed once per call on the host in double by make_*_coeffs, then rounded
// to the storage type T; the per-element functions see only T. This mirrors
// PyTorch's single-tensor (non-foreach, non-fused) path, where Python-float
// scalars meet fp32 tensors, so fp32 results should agree with torch to rounding.
//
// Operation order follows PyTorch's so fp32 rounding agrees closely:
//   SGD:  d = g + wd*p;  buf = mom*buf + (1-damp)*d;  p = p - lr*d
//   Adam: v = b2*v + ((1-b2)*g)*g;  denom = sqrt(v)/sqrt(bc2) + eps;
//         p = p - step_size*(m/denom)      (addcdiv: value * (t1 / t2))
// The first moment is b1*m + (1-b1)*g; torch >= 2.0 writes it as
// lerp(m, g, 1-b1): the same value up to rounding.
// eps is added to sqrt(v)/sqrt(bc2), i.e. to sqrt(v_hat), as in PyTorch and
// the Adam paper; TF/Keras's "epsilon hat" form adds it to the uncorrected
// sqrt(v) instead, which differs early in training when sqrt(v) ~ eps.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/hostdev.h"

namespace rz {

// torch.optim.SGD (maximize off). momentum == 0 means no momentum buffer.
struct SgdHyper {
  double lr = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

// torch.optim.Adam, or torch.optim.AdamW when decoupled (amsgrad and maximize off).
struct AdamHyper {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = false;  // AdamW: decay multiplies the parameter, not the gradient.
};

template <typename T>
struct SgdCoeffs {
  T lr;
  T momentum;
  T one_minus_dampening;
  T weight_decay;
  bool use_momentum;  // momentum != 0: the buffer exists and is read/written.
  bool nesterov;
  bool first_step;  // the buffer is initialized to d (not decayed) on the first step.
};

template <typename T>
struct AdamCoeffs {
  T beta1;
  T one_minus_beta1;
  T beta2;
  T one_minus_beta2;
  T step_size;              // lr / (1 - beta1^step)
  T bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  T eps;
  T l2_decay;     // Adam: added to the gradient as l2_decay*param; 0 for AdamW.
  T param_scale;  // AdamW: 1 - lr*wd, applied to the parameter first; 1 for Adam.
  bool scale_param;
};

// Host only (uses the hyper structs' doubles); no per-element work here.
template <typename T>
inline SgdCoeffs<T> make_sgd_coeffs(const SgdHyper& h, bool first_step) {
  return SgdCoeffs<T>{static_cast<T>(h.lr),
                      static_cast<T>(h.momentum),
                      static_cast<T>(1.0 - h.dampening),
                      static_cast<T>(h.weight_decay),
                      h.momentum != 0.0,
                      h.nesterov,
                      first_step};
}

// step is the 1-based count of updates including this one (PyTorch increments
// state['step'] before using it), so step >= 1; callers validate.
template <typename T>
inline AdamCoeffs<T> make_adam_coeffs(const AdamHyper& h, int64_t step) {
  const double t = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(h.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(h.beta2, t);
  return AdamCoeffs<T>{static_cast<T>(h.beta1),
                       static_cast<T>(1.0 - h.beta1),
                       static_cast<T>(h.beta2),
                       static_cast<T>(1.0 - h.beta2),
                       static_cast<T>(h.lr / bias_correction1),
                       static_cast<T>(std::sqrt(bias_correction2)),
                       static_cast<T>(h.eps),
                       static_cast<T>(h.decoupled ? 0.0 : h.weight_decay),
                       static_cast<T>(h.decoupled ? 1.0 - h.lr * h.weight_decay : 1.0),
                       h.decoupled && h.weight_decay != 0.0};
}

// One element of SGD. buf is touched only when c.use_momentum, so a caller
// without a momentum buffer may pass any lvalue.
template <typename T>
RZ_HD void sgd_update(T& param, T grad, T& buf, const SgdCoeffs<T>& c) {
  T d = grad;
  // PyTorch skips the term when wd == 0, which keeps an inf parameter from
  // turning its update into NaN via 0*inf.
  if (c.weight_decay != T(0)) d = d + c.weight_decay * param;
  if (c.use_momentum) {
    buf = c.first_step ? d : c.momentum * buf + c.one_minus_dampening * d;
    d = c.nesterov ? d + c.momentum * buf : buf;
  }
  param = param - c.lr * d;
}

// One element of Adam/AdamW; m and v are the first and second moment states.
template <typename T>
RZ_HD void adam_update(T& param, T grad, T& m, T& v, const AdamCoeffs<T>& c) {
  if (c.scale_param) param = param * c.param_scale;
  T g = grad;
  if (c.l2_decay != T(0)) g = g + c.l2_decay * param;
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * g * g;
  const T denom = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
  param = param - c.step_size * (m / denom);
}

// One element of a weight EMA: ema = decay * ema + (1 - decay) * value.
template <typename T>
RZ_HD T ema_blend(T ema, T value, T decay) {
  return decay * ema + (T(1) - decay) * value;
}

}  // namespace rz
