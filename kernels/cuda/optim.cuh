// Fused multi-tensor optimizers: the CUDA twins of kernels/cpu/optim.h that
// update every parameter tensor of a model in ONE launch ("multi-tensor apply",
// as in apex / PyTorch's foreach and fused optimizers).
//
// Scheme. The flattened element space of the list is cut per tensor into chunks
// of kMultiTensorChunk elements (a tensor's last chunk may be short, a tensor of
// size 0 has none). Chunks are numbered tensor by tensor; chunk_offsets[t] is
// the number of the first chunk of tensor t (an exclusive prefix sum of the
// per-tensor chunk counts, count + 1 entries, chunk_offsets[count] = total).
// Thread block b handles chunks b, b + gridDim.x, ...: it finds its tensor by a
// binary search in chunk_offsets, then its threads stride over the chunk's
// elements. The table depends only on the sizes, so a trainer builds it once
// (multi_tensor_chunk_offsets on the host, then one copy to the device) and
// reuses it every step together with the pointer arrays.
//
// Precision: parameters, gradients and states are fp32 (master weights). The
// step-dependent scalars are computed on the host by make_sgd_coeffs /
// make_adam_coeffs and the per-element math is sgd_update / adam_update from
// kernels/common/optim_math.h: the arithmetic of sgd_step_cpu / adam_step_cpu.
// The only possible difference is FMA contraction by nvcc (a*b + c fused), so
// results agree with the CPU to ~1 ulp rather than bit for bit.
//
// Memory traffic per element as in kernels/cpu/optim.h (SGD 3-5 words, Adam 7)
// plus one binary search of ~log2(count) int64 reads per chunk.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/optim_math.h"

namespace rz {

// Elements per chunk (one thread block's unit of work): 16 per thread at 256
// threads, small enough that tiny tensors (BN, SE biases) waste little.
constexpr int64_t kMultiTensorChunk = 4096;

// A list of `count` fp32 tensors. Every pointer here is DEVICE memory: each
// array has `count` entries, chunk_offsets has count + 1.
//  - grads[t] == nullptr: tensor t has no gradient this step and is skipped
//    (parameter and states untouched), like PyTorch skipping p.grad is None.
//  - state1: SGD momentum buffer / Adam first moment m. For SGD without
//    momentum it is never read, and the array itself may be nullptr.
//  - state2: Adam second moment v; unused (may be nullptr) for SGD.
// Parallel arrays of tensor t all have sizes[t] elements and must not overlap
// another tensor's.
struct TensorList {
  float* const* params = nullptr;
  const float* const* grads = nullptr;
  float* const* state1 = nullptr;
  float* const* state2 = nullptr;
  const int64_t* sizes = nullptr;
  const int64_t* chunk_offsets = nullptr;  // from multi_tensor_chunk_offsets
  int count = 0;
  int64_t total_chunks = 0;  // == chunk_offsets[count], known on the host
};

// Host: fills chunk_offsets[0..count] (count + 1 entries) for the HOST array
// sizes[0..count) and returns the total number of chunks.
inline int64_t multi_tensor_chunk_offsets(const int64_t* sizes, int count, int64_t* chunk_offsets) {
  int64_t total = 0;
  for (int t = 0; t < count; ++t) {
    chunk_offsets[t] = total;
    total += (sizes[t] + kMultiTensorChunk - 1) / kMultiTensorChunk;
  }
  chunk_offsets[count] = total;
  return total;
}

// The chunk table's lookup: the tensor and element range [begin, end)
// of chunk c, by binary search in chunk_offsets. Shared by every multi-tensor
// kernel (optimizers, gradient clipping).
struct ChunkRange {
  int tensor;
  int64_t begin;  // element range [begin, end) inside that tensor
  int64_t end;
};

// The tensor t owning chunk c is the last one with chunk_offsets[t] <= c
// (empty tensors share their offset with the next one; taking the last skips
// them). c < total_chunks guarantees chunk_offsets[t + 1] > c.
RZ_HD ChunkRange locate_chunk(const TensorList& list, int64_t c) {
  int lo = 0, hi = list.count - 1;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (list.chunk_offsets[mid] <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t begin = (c - list.chunk_offsets[lo]) * kMultiTensorChunk;
  const int64_t size = list.sizes[lo];
  return ChunkRange{lo, begin, begin + kMultiTensorChunk < size ? begin + kMultiTensorChunk : size};
}

// torch.optim.SGD over the whole list (see sgd_step_cpu). Needs list.state1
// when h.momentum != 0. first_step: the momentum buffers are initialized to the
// first update direction.
cudaError_t sgd_step_multi_cuda(const TensorList& list, const SgdHyper& h, bool first_step,
                                cudaStream_t stream);

// torch.optim.Adam / AdamW over the whole list (see adam_step_cpu); step is the
// 1-based update count including this update (>= 1). Needs state1 (m) and
// state2 (v), zero before step 1.
cudaError_t adam_step_multi_cuda(const TensorList& list, const AdamHyper& h, int64_t step,
                                 cudaStream_t stream);

// The same updates with the step's coefficients (make_sgd_coeffs /
// make_adam_coeffs on the host) read from DEVICE memory when the kernel runs,
// so a captured CUDA graph replays with whatever the host copied there for the
// current step (learning rate, bias corrections). use_momentum must equal
// coeffs->use_momentum (the host checks state1 with it).
// gate (device fp32 scalar, may be nullptr): when *gate is not finite (the
// step's loss was NaN or inf) the kernel changes nothing - parameters and
// state stay as they were - so a replayed graph skips a bad step without a
// host decision inside the step.
cudaError_t sgd_step_multi_dev_cuda(const TensorList& list, const SgdCoeffs<float>* coeffs,
                                    bool use_momentum, const float* gate, cudaStream_t stream);
cudaError_t adam_step_multi_dev_cuda(const TensorList& list, const AdamCoeffs<float>* coeffs,
                                     const float* gate, cudaStream_t stream);

// Weight EMA, twin of ema_blend_cpu: ema[i] = ema_blend(ema[i], value[i],
// decay) in fp32, one pass. gate as above: a non-finite *gate leaves ema
// unchanged (a skipped step in a replayed graph).
cudaError_t ema_blend_cuda(float* ema, const float* value, int64_t n, double decay,
                           const float* gate, cudaStream_t stream);

}  // namespace rz
