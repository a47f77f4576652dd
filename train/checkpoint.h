// Checkpoints: one safetensors file with everything a run needs to continue
// exactly where it stopped:
//   model.<timm name>      the weights, timm layout (OIHW), as saved by timm_state_dict
//   ema.<timm name>        the EMA weights, when EMA is on
//   optim.<i>.<slot>       optimizer state per parameter (our layout), incl. step counts
//   __metadata__           "format": "ranzcr-checkpoint-1", "state": JSON of TrainState
// Written atomically (temp file + rename): a crash never leaves half a file.
// The model.* part alone is a timm state dict: strip the prefix and timm loads it.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "engine/module.h"
#include "engine/optim.h"

namespace rz {

struct TrainState {
  int64_t epoch = 0;           // epochs completed
  int64_t step = 0;            // optimizer steps completed
  int64_t batch_in_epoch = 0;  // micro-batches of the current epoch already consumed
  double best_metric = -std::numeric_limits<double>::infinity();
  int64_t best_epoch = -1;
  std::map<std::string, std::array<uint64_t, 4>> rng;  // named generator states
  std::string config_toml;                             // the resolved configuration
};

void save_checkpoint(const std::string& path, const Module& model, const Module* ema,
                     const Optimizer* optim, const TrainState& state);

// Loads into existing objects (strict: every model tensor must be there).
// `ema` and `optim` may be null to skip them; the file must hold them when given.
TrainState load_checkpoint(const std::string& path, Module& model, Module* ema, Optimizer* optim);

// The model weights of a checkpoint as a timm-named state dict (for
// initializing another stage from it, or exporting).
NamedTensors checkpoint_weights(const std::string& path, bool ema = false);

// Reads only the TrainState (for `ranzcr eval`/`info` on a run folder).
TrainState read_checkpoint_state(const std::string& path);

}  // namespace rz
