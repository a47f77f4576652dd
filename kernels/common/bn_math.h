// Batch-norm formulas shared by the CPU and CUDA twins.
#pragma once

#include <cmath>

#include "kernels/common/hostdev.h"

namespace rz {

// Per-channel backward coefficients, from the channel's sums over its M
// values: dx = k1 * (dy - mdy - (x - mean) * k2). In eval mode the statistics
// are constants, so mdy = k2 = 0 and dx = gamma * invstd * dy.
struct BnBackwardCoeffs {
  double k1, mdy, k2;
};

RZ_HD BnBackwardCoeffs bn_backward_coeffs(double gamma, double invstd, double sum_dy,
                                          double sum_dy_xc, double inv_m, bool training) {
  if (!training) return {gamma * invstd, 0.0, 0.0};
  return {gamma * invstd, sum_dy * inv_m, invstd * invstd * sum_dy_xc * inv_m};
}

template <typename S>
RZ_HD S bn_backward_dx(S k1, S mdy, S k2, S dy, S x_minus_mean) {
  return k1 * (dy - mdy - x_minus_mean * k2);
}

// Eval-mode BN folded into a per-channel affine: BN(x) = x * scale + shift,
// scale = gamma / sqrt(var + eps), shift = beta - mean * scale (what a
// convolution epilogue applies, kernels/common/conv_epilogue.h).
struct BnFold {
  double scale, shift;
};

RZ_HD BnFold bn_fold(double gamma, double beta, double mean, double var, double eps) {
  const double scale = gamma / sqrt(var + eps);
  return {scale, beta - mean * scale};
}

// Synchronized batch norm (kernels/cpu/sync_bn.h): the batch statistics of
// a channel from its sum and sum of squares over n values on all ranks
// (biased variance, clamped at 0 against rounding), and the running
// statistics' update (unbiased variance, as PyTorch; n == 1: the biased).
struct BnBatchStats {
  double mean, var;
};

RZ_HD BnBatchStats bn_stats_from_sums(double sum, double sum_sq, double n) {
  const double mean = sum / n;
  const double var = sum_sq / n - mean * mean;
  return {mean, var > 0.0 ? var : 0.0};
}

RZ_HD void bn_running_update(double mean, double var, double n, double momentum, double* running_mean,
                             double* running_var) {
  const double unbiased = n > 1.0 ? var * n / (n - 1.0) : var;
  *running_mean = (1.0 - momentum) * *running_mean + momentum * mean;
  *running_var = (1.0 - momentum) * *running_var + momentum * unbiased;
}

}  // namespace rz
