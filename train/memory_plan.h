// What a training run will need in host and GPU memory, estimated from the
// configuration before anything is allocated, so that a run that cannot fit
// stops at once with the estimate and the settings to lower, instead of
// failing minutes later in the first step.
//
// The estimate: parameters (fp32 weights, gradients, optimizer state, EMA,
// the frozen teacher of a distillation stage), the activations saved for
// backward (models/seresnet.h resnet_cost, the figure `ranzcr info` prints)
// scaled by a factor measured against real peaks, the loader's batches in
// flight, and a fixed allowance for the runtime (CUDA context and library
// workspaces; the CPU GEMM scratch). Calibration, from bench/RESULTS.md:
//   CUDA: seresnet152d 512 px, bf16 batch 32, measured pool peak 19.44 GiB
//         against 26.89 GB of saved activations estimated; fp32 batch 8,
//         10.00 GiB against 13.45 GB: factor 0.8.
//   CPU:  seresnet152d 256 px fp32 batch 2 (model_bench, a 2-core Intel Xeon VM,
//         /usr/bin/time), peak RSS 1.25 GB of which 0.84 GB estimated
//         activations: factor 1.0.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "train/config.h"

namespace rz {

// Batches the training loader keeps in flight (train/trainer.cpp uses it;
// the estimate counts them).
inline constexpr int kTrainLoaderPrefetch = 4;

struct MemoryEstimate {
  // Named parts in bytes, for the message.
  std::vector<std::pair<std::string, double>> host_parts, device_parts;
  double host_bytes = 0, device_bytes = 0;  // totals (device: 0 on a CPU run)
};

// on_cuda: the run computes on a GPU (activations and parameters there).
MemoryEstimate estimate_training_memory(const TrainConfig& cfg, bool on_cuda);

// The estimate as lines "  activations saved for backward   3.2 GB".
std::string format_memory_estimate(const MemoryEstimate& e);

// Throws rz::Error when the estimate exceeds what is available (host:
// MemAvailable or the cgroup limit; GPU: free memory of `cuda_device`, -1 on a
// CPU run), with the estimate and the settings to lower. Skipped when
// run.memory_check is false, or when the available memory is unknown.
void check_training_memory(const TrainConfig& cfg, int cuda_device);

}  // namespace rz
