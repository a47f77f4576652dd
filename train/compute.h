// Where and in what precision a run computes: the device (`--device`,
// run.device) and the activation dtype (`--precision`, run.precision).
//   fp32: parameters and activations f32 (CPU or CUDA);
//   bf16: CUDA only; parameters stay f32 master weights, the input batch is
//         cast to bf16 and the ops keep bf16 activations with fp32 math,
//         BN statistics and losses (engine/ops.h).
#pragma once

#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/tensor.h"

namespace rz {

struct Compute {
  Device device = Device::cpu();
  DType activations = DType::F32;
  std::string str() const;  // "cuda:0 (NVIDIA H100 ...), bf16" or "cpu, fp32"
};

// device: cpu, cuda, cuda:N or auto; precision: fp32 or bf16. bf16 on the CPU
// is an error (the CPU backend computes in f32/f64). On CUDA, also applies
// `deterministic` (cuDNN algorithms with reproducible results) and
// `allow_tf32` to the engine's CUDA context for that device.
Compute resolve_compute(const std::string& device, const std::string& precision,
                        bool deterministic = false, bool allow_tf32 = false);

// A host batch (f32) on the compute device in the activation dtype.
Tensor to_compute(const Tensor& host, const Compute& c);
// Any tensor as host f32 values (logits for metrics, whatever their dtype and device).
std::vector<float> host_floats(const Tensor& t);

}  // namespace rz
