#include "train/memory_plan.h"

#include <cstdio>

#include "engine/device.h"
#include "engine/error.h"
#include "models/seresnet.h"

namespace rz {

namespace {
constexpr double kCudaActivationFactor = 0.8;  // measured pool peak / estimate (header)
constexpr double kCpuActivationFactor = 1.0;   // measured RSS / estimate (header)
constexpr double kCudaRuntimeBytes = 1.0 * (1 << 30);  // context, cuDNN/cuBLAS workspaces
constexpr double kHostRuntimeBytes = 0.3 * (1 << 30);  // binary, OpenMP, GEMM scratch

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}
}  // namespace

MemoryEstimate estimate_training_memory(const TrainConfig& cfg, bool on_cuda) {
  ResNetConfig rc = resnet_config(cfg.model.name);
  rc.in_chans = cfg.model.in_chans;
  rc.num_classes = 11;
  int64_t params = 0;
  double saved_per_image = 0;
  for (const StageCost& s : resnet_cost(rc, cfg.model.img_size)) {
    params += s.params;
    saved_per_image += s.activations;
  }
  const bool kd = cfg.stage.kind == "student-kd";
  const std::string& opt = cfg.optim.name;
  const double state_copies = opt == "sgd" ? (cfg.optim.momentum > 0 ? 1 : 0) : 2;
  const double p4 = 4.0 * static_cast<double>(params);
  const double act_bytes = on_cuda && cfg.run.precision == "bf16" ? 2 : 4;
  const double factor = on_cuda ? kCudaActivationFactor : kCpuActivationFactor;
  const double batch = static_cast<double>(cfg.train.batch);
  const double S = static_cast<double>(cfg.model.img_size);
  const double input_batch = batch * S * S * static_cast<double>(cfg.model.in_chans) * 4;

  MemoryEstimate e;
  auto& model_parts = on_cuda ? e.device_parts : e.host_parts;
  model_parts.push_back({"weights and gradients (fp32)", 2 * p4});
  if (state_copies > 0) model_parts.push_back({"optimizer state (" + opt + ")", state_copies * p4});
  if (cfg.train.ema_decay > 0) model_parts.push_back({"EMA weights", p4});
  if (kd) model_parts.push_back({"frozen teacher weights", p4});
  model_parts.push_back({"activations saved for backward (batch " + std::to_string(cfg.train.batch) +
                             ", " + std::to_string(cfg.model.img_size) + " px)",
                         factor * saved_per_image * batch * act_bytes});
  e.host_parts.push_back({"loader batches in flight", static_cast<double>(kTrainLoaderPrefetch + 1) *
                                                           input_batch * (kd ? 2 : 1)});
  if (on_cuda) {
    e.host_parts.push_back({"model built on the host before the move", p4});
    e.device_parts.push_back({"CUDA context and library workspaces", kCudaRuntimeBytes});
  }
  e.host_parts.push_back({"runtime (code, threads, scratch)", kHostRuntimeBytes});
  for (const auto& [name, b] : e.host_parts) e.host_bytes += b;
  for (const auto& [name, b] : e.device_parts) e.device_bytes += b;
  return e;
}

std::string format_memory_estimate(const MemoryEstimate& e) {
  std::string out;
  char line[160];
  auto section = [&](const char* title, const auto& parts, double total) {
    if (parts.empty()) return;
    std::snprintf(line, sizeof line, "  %s: %s\n", title, gb(total).c_str());
    out += line;
    for (const auto& [name, b] : parts) {
      std::snprintf(line, sizeof line, "    %-58s %10s\n", name.c_str(), gb(b).c_str());
      out += line;
    }
  };
  section("GPU", e.device_parts, e.device_bytes);
  section("host", e.host_parts, e.host_bytes);
  return out;
}

void check_training_memory(const TrainConfig& cfg, int cuda_device) {
  if (!cfg.run.memory_check) return;
  const bool on_cuda = cuda_device >= 0;
  const MemoryEstimate e = estimate_training_memory(cfg, on_cuda);
  const char* advice =
      "lower train.batch (and raise train.accum_steps to keep the effective batch), "
      "model.img_size or data.workers; on a GPU, run.precision = \"bf16\" halves the "
      "activations. To start anyway, set run.memory_check = false.";
  const size_t host = host_available_memory();
  if (host > 0 && e.host_bytes > static_cast<double>(host))
    RZ_THROW("this run needs an estimated ", gb(e.host_bytes), " of host memory, but ",
             gb(static_cast<double>(host)), " is available:\n", format_memory_estimate(e), advice);
  if (on_cuda) {
    const DeviceMemory m = cuda_memory_info(cuda_device);
    if (e.device_bytes > static_cast<double>(m.free_bytes))
      RZ_THROW("this run needs an estimated ", gb(e.device_bytes), " of GPU memory on cuda:",
               cuda_device, ", but ", gb(static_cast<double>(m.free_bytes)), " of ",
               gb(static_cast<double>(m.total_bytes)), " is free:\n", format_memory_estimate(e),
               advice);
  }
}

}  // namespace rz
