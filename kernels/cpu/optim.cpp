#include "kernels/cpu/optim.h"

namespace rz {

template <typename T>
void sgd_step_cpu(T* param, const T* grad, T* momentum_buf, int64_t n, const SgdHyper& h,
                  bool first_step) {
  const SgdCoeffs<T> c = make_sgd_coeffs<T>(h, first_step);
  if (c.use_momentum) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) sgd_update(param[i], grad[i], momentum_buf[i], c);
  } else {
    // No buffer exists; sgd_update never touches this stand-in without momentum.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T unused = T(0);
      sgd_update(param[i], grad[i], unused, c);
    }
  }
}

template <typename T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, int64_t n, const AdamHyper& h,
                   int64_t step) {
  const AdamCoeffs<T> c = make_adam_coeffs<T>(h, step);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) adam_update(param[i], grad[i], m[i], v[i], c);
}

template <typename T>
void ema_blend_cpu(T* ema, const T* value, int64_t n, double decay) {
  const T d = static_cast<T>(decay);
  for (int64_t i = 0; i < n; ++i) ema[i] = ema_blend(ema[i], value[i], d);
}

template void ema_blend_cpu<float>(float*, const float*, int64_t, double);
template void ema_blend_cpu<double>(double*, const double*, int64_t, double);
template void sgd_step_cpu<float>(float*, const float*, float*, int64_t, const SgdHyper&, bool);
template void sgd_step_cpu<double>(double*, const double*, double*, int64_t, const SgdHyper&, bool);
template void adam_step_cpu<float>(float*, const float*, float*, float*, int64_t, const AdamHyper&,
                                   int64_t);
template void adam_step_cpu<double>(double*, const double*, double*, double*, int64_t,
                                    const AdamHyper&, int64_t);

}  // namespace rz
