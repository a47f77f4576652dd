// CPU reference twins of the elementwise activations. Contiguous buffers of n
// elements; T is float or double. Forward writes y; backward OVERWRITES dx
// (writes, never adds). y and x (or dx and dy) may alias for in-place use.
// Backward takes the forward OUTPUT y, not the input.
#pragma once

#include <cstdint>

namespace rz {

// y = max(x, 0)
template <class T>
void relu_fwd_cpu(const T* x, T* y, int64_t n);

// writes dx = (y > 0) ? dy : 0, with y the forward output.
template <class T>
void relu_bwd_cpu(const T* y, const T* dy, T* dx, int64_t n);

// y = 1 / (1 + exp(-x)), stable for large |x|.
template <class T>
void sigmoid_fwd_cpu(const T* x, T* y, int64_t n);

// writes dx = dy * y * (1 - y), with y the forward output.
template <class T>
void sigmoid_bwd_cpu(const T* y, const T* dy, T* dx, int64_t n);

}  // namespace rz
