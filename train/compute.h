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

// CUDA settings applied to the engine context of the chosen device
// (EngineCudaOptions in engine/cuda_context.h).
struct CudaSettings {
  bool deterministic = false;     // cuDNN algorithms with reproducible results only
  bool allow_tf32 = false;        // fp32 convolutions / GEMMs may use TF32
  std::string conv_impl = "cudnn";  // cudnn, native or auto (engine/conv_autotune.h)
  bool allow_unvalidated_kernels = false;
};

// device: cpu, cuda, cuda:N or auto; precision: fp32 or bf16. bf16 on the CPU
// is an error (the CPU backend computes in f32/f64). On CUDA, `cuda` is
// applied to the engine's context for that device.
Compute resolve_compute(const std::string& device, const std::string& precision,
                        const CudaSettings& cuda = {});

// A host batch (f32) on the compute device in the activation dtype.
Tensor to_compute(const Tensor& host, const Compute& c);
// Any tensor as host f32 values (logits for metrics, whatever their dtype and device).
std::vector<float> host_floats(const Tensor& t);

}  // namespace rz
