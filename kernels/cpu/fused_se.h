// CPU reference twin of the fused squeeze-excitation block tail of an SE
// bottleneck (timm seresnet*: bn3 -> SE -> residual add -> ReLU):
//   u   = BN(t)                          per-channel affine, batch or running stats
//   p   = mean over H,W of u             [N, C]   ("pooled", the squeeze)
//   z   = relu(p W1^T + b1)              [N, rd]  ("hidden"; W1 [rd, C] row-major)
//   s   = sigmoid(z W2^T + b2)           [N, C]   ("gate";   W2 [C, rd] row-major)
//   out = relu(u * s[n, c] + shortcut)   [N, HW, C]
// i.e. the composition of batch_norm_*_cpu, global_avg_pool_fwd_cpu,
// linear_fwd_cpu, relu, sigmoid, channel_scale_fwd_cpu, add_cpu and relu.
// t, shortcut, out, dout, dt, dshortcut: NHWC contiguous, viewed as
// [N, HW, C]. T is float or double for every argument (one dtype per op on
// the CPU backend); the CUDA twin (kernels/cuda/fused_se.cuh) takes fp32
// parameters and saved vectors with float or bf16 activations.
//
// BN semantics are those of batch_norm_fwd_train_cpu / _eval_cpu (eps,
// momentum, biased batch variance, unbiased running update, M = N*HW == 1
// keeps the biased 0). The statistics come from one pass of per-image shifted
// sums (shift = the channel's first value, kernels/common/se_math.h); the
// same per-image sums give the squeeze, since BN is a per-channel affine map:
//   p[n,c] = (sum_hw (t - shift) / HW - (mean - shift)) * scale + beta.
// All math in double, rounded to T once per output; every sum is taken in a
// fixed order (hw, then n), so results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace rz {

struct SeDims {
  int64_t N, HW, C, rd;  // batch, pixels per image, channels, SE hidden width
};

struct FusedSeOptions {
  bool training = true;   // batch statistics (+ running update) or running statistics
  double momentum = 0.1;  // forward only
  double eps = 1e-5;      // forward only
};

// The parameters: BN affine (gamma, beta [C]), SE fc1 (w1 [rd, C], b1 [rd]),
// SE fc2 (w2 [C, rd], b2 [C]).
template <class P>
struct SeWeights {
  const P* gamma;
  const P* beta;
  const P* w1;
  const P* b1;
  const P* w2;
  const P* b2;
};

// What the forward saves for the backward: the BN statistics used (mean,
// invstd [C]) and the small SE activations pooled p [N, C], hidden z [N, rd]
// (after the ReLU) and gate s [N, C] (after the sigmoid). The forward writes
// them (each may be nullptr there); the backward reads them all (as
// SeSaved<const P>, see as_input()).
template <class P>
struct SeSaved {
  P* mean;
  P* invstd;
  P* pooled;
  P* hidden;
  P* gate;
  SeSaved<const P> as_input() const { return {mean, invstd, pooled, hidden, gate}; }
};

// Parameter gradients, written (never added); each may be nullptr (skipped).
template <class P>
struct SeGrads {
  P* dgamma;
  P* dbeta;
  P* dw1;
  P* db1;
  P* dw2;
  P* db2;
};

// Forward. Training: batch statistics; running_mean / running_var (each may be
// nullptr) are updated in place. Eval: running_mean and running_var are
// required and only read. Requires N, HW, C, rd >= 1.
// image_sums (may be nullptr): [2][N][C] doubles, per image and channel the
// sum and the sum of squares of t, already computed by t's producer (the
// convolution epilogue, kernels/common/conv_epilogue.h, with segments = N);
// the statistics pass is skipped (shift 0 instead of t[0, 0, c]).
template <class T>
void fused_se_fwd_cpu(const T* t, const T* shortcut, const SeWeights<T>& w, T* out,
                      const SeSaved<T>& saved, T* running_mean, T* running_var, const SeDims& d,
                      const FusedSeOptions& opt, const double* image_sums = nullptr);

// Backward (opt.training selects the BN backward; momentum and eps are unused).
// out is the forward output (its ReLU mask); t the forward input. With
// g = dout * [out > 0] it writes (never adds):
//   dshortcut = g (required; may alias dout),
//   dt (required): the gradient through BN of du = g * s[n,c] + dp[n,c] / HW,
//      where dp is the gradient reaching the squeeze through the SE MLP,
//   grads: dgamma, dbeta, dw1, db1, dw2, db2.
template <class T>
void fused_se_bwd_cpu(const T* t, const T* out, const T* dout, const SeWeights<T>& w,
                      const SeSaved<const T>& saved, T* dt, T* dshortcut, const SeGrads<T>& grads,
                      const SeDims& d, const FusedSeOptions& opt);

}  // namespace rz
