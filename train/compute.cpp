#include "train/compute.h"

#include "engine/conv_autotune.h"
#include "engine/cuda_context.h"
#include "engine/error.h"

namespace rz {

std::string Compute::str() const {
  std::string s = device.str();
  if (device.is_cuda()) s += " (" + engine_cuda_context(device.index).props().name + ")";
  return s + ", " + (activations == DType::BF16 ? "bf16 mixed precision" : "fp32");
}

Compute resolve_compute(const std::string& device, const std::string& precision,
                        const CudaSettings& cuda) {
  Compute c;
  c.device = parse_device(device);
  RZ_CHECK(precision == "fp32" || precision == "bf16", "precision must be fp32 or bf16, got '",
           precision, "'");
  if (precision == "bf16") {
    RZ_CHECK(c.device.is_cuda(), "precision bf16 needs a CUDA device (device '", device,
             "' resolved to ", c.device.str(), "); the CPU backend computes in fp32");
    c.activations = DType::BF16;
  }
  const ConvImpl impl = parse_conv_impl(cuda.conv_impl);  // checked on every device
  if (c.device.is_cuda()) {
    CudaContext& ctx = engine_cuda_context(c.device.index);
    ctx.options.deterministic = cuda.deterministic;
    ctx.options.allow_tf32 = cuda.allow_tf32;
    ctx.options.conv_impl = impl;
    ctx.options.allow_unvalidated_kernels = cuda.allow_unvalidated_kernels;
  }
  return c;
}

Tensor to_compute(const Tensor& host, const Compute& c) {
  return host.to(c.device).to(c.activations);
}

std::vector<float> host_floats(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::F32).to_vector<float>();
}

}  // namespace rz
