// Per-element loss math shared by the CPU twins and the CUDA kernels.
#pragma once

#include <cmath>

#include "kernels/common/activation_math.h"
#include "kernels/common/hostdev.h"

namespace rz {

// log(1 + exp(x)), stable for any |x|: log1p(exp(-|x|)) + max(x, 0).
template <class T>
RZ_HD T softplus(T x) {
  return std::log1p(std::exp(-std::fabs(x))) + (x > T(0) ? x : T(0));
}

// Binary cross-entropy on a logit x with target y in [0, 1] and positive weight
// pw (PyTorch BCEWithLogitsLoss, pos_weight):
//   loss = -[pw*y*log(sigmoid(x)) + (1-y)*log(1-sigmoid(x))]
//        = pw*y*softplus(-x) + (1-y)*softplus(x)
// which equals PyTorch's (1-y)*x + (1+(pw-1)*y)*(log1p(exp(-|x|)) + max(-x,0))
// (use softplus(x) = x + softplus(-x)) but never subtracts two large numbers,
// so loss(-100, 0) is the true ~3.7e-44 and loss(+-1e4, .) stays finite.
template <class T>
RZ_HD T bce_with_logits(T x, T y, T pw) {
  return pw * y * softplus(-x) + (T(1) - y) * softplus(x);
}

// d loss / dx = (1-y) - (1+(pw-1)*y)*sigmoid(-x)
//             = (1-y)*sigmoid(x) - pw*y*sigmoid(-x)   (sigmoid(x) = 1 - sigmoid(-x)),
// the second form again without cancellation. pw = 1 gives sigmoid(x) - y,
// since sigmoid(x) + sigmoid(-x) = 1.
template <class T>
RZ_HD T bce_with_logits_grad(T x, T y, T pw) {
  return (T(1) - y) * sigmoid(x) - pw * y * sigmoid(-x);
}

}  // namespace rz
