// Per-element activation math shared by the CPU twins and the CUDA kernels.
// Derivatives are written in terms of the forward OUTPUT y, so backward needs
// only what forward produced (no saved input).
#pragma once

#include <cmath>

#include "kernels/common/hostdev.h"

namespace rz {

// max(x, 0); NaN propagates (like PyTorch's clamp_min).
template <class T>
RZ_HD T relu(T x) {
  return x < T(0) ? T(0) : x;
}

// 1 / (1 + exp(-x)) without overflow: exp(-|x|) lies in (0, 1] for every x, so
// sigmoid(+-1000) is exactly 1 / 0 and sigmoid(-40) keeps its ~4.2e-18.
template <class T>
RZ_HD T sigmoid(T x) {
  const T e = std::exp(-std::fabs(x));
  const T r = T(1) / (T(1) + e);
  return x < T(0) ? e * r : r;
}

// d relu / dx given y = relu(x): dy where the unit was active, 0 otherwise
// (the kink at 0 gets gradient 0, as in PyTorch).
template <class T>
RZ_HD T relu_grad_from_output(T y, T dy) {
  return y > T(0) ? dy : T(0);
}

// d sigmoid / dx = y (1 - y) given y = sigmoid(x).
template <class T>
RZ_HD T sigmoid_grad_from_output(T y, T dy) {
  return dy * y * (T(1) - y);
}

}  // namespace rz
