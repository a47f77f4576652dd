// Checkpoints: one safetensors file with everything a run needs to continue
// exactly where it stopped:
//   model.<timm name>      the weights, timm layout (OIHW), as saved by timm_state_dict
//   ema.<timm name>        the EMA weights, when EMA is on
//   optim.<i>.<slot>       optimizer state per parameter (our layout), incl. step counts
//   __metadata__           "format": "ranzcr-checkpoint-1" (what marks the file as ours),
//                          "state": JSON of TrainState,
//                          "optimizer": the optimizer's name, when optimizer state was saved
// Written atomically (engine/atomic_file.h): a crash never leaves half a file.
// The model.* part alone is a timm state dict: strip the prefix and timm loads it.
//
// Reading trusts nothing: the state JSON is checked field by field (types,
// ranges, exact u64 decimal RNG words), every floating tensor must be finite,
// and every error names the file, the field or tensor, and the value.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "engine/module.h"
#include "engine/optim.h"
#include "models/timm_weights.h"

namespace rz {

struct TrainState {
  int64_t epoch = 0;           // epochs completed
  int64_t step = 0;            // optimizer steps completed
  int64_t batch_in_epoch = 0;  // micro-batches of the current epoch already consumed
  double best_metric = -std::numeric_limits<double>::infinity();
  int64_t best_epoch = -1;     // -1 (none yet) or 1..epoch
  std::map<std::string, std::array<uint64_t, 4>> rng;  // named generator states
  std::string config_toml;                             // the resolved configuration
};

// The "format" metadata value that marks a ranzcr checkpoint. Other files
// (timm/PyTorch exports with "format": "pt", no metadata, ...) are plain weights.
inline constexpr const char* kCheckpointFormat = "ranzcr-checkpoint-1";

// Plausibility bounds of the state read back from a file.
inline constexpr int64_t kMaxCheckpointEpoch = 1'000'000;
inline constexpr int64_t kMaxCheckpointStep = 1'000'000'000'000;
inline constexpr int64_t kMaxCheckpointBatch = 1'000'000'000;

void save_checkpoint(const std::string& path, const Module& model, const Module* ema,
                     const Optimizer* optim, const TrainState& state);

// Loads into existing objects (strict: every model tensor must be there).
// `ema` and `optim` may be null to skip them; the file must hold them when
// given (a checkpoint saved without optimizer state, such as best.ckpt, is
// refused rather than resumed with a fresh optimizer).
TrainState load_checkpoint(const std::string& path, Module& model, Module* ema, Optimizer* optim);

// The model weights of a checkpoint as a timm-named state dict (for
// initializing another stage from it, or exporting).
NamedTensors checkpoint_weights(const std::string& path, bool ema = false);

// Reads only the TrainState (for `ranzcr eval`/`info` on a run folder).
TrainState read_checkpoint_state(const std::string& path);

// Whether safetensors metadata marks a ranzcr checkpoint: "format" is
// kCheckpointFormat. Another "ranzcr-checkpoint-N" is an error naming `path`
// (a version this build cannot read); any other metadata means plain weights.
bool is_ranzcr_checkpoint(const std::map<std::string, std::string>& metadata, const std::string& path);

// Model weights from any weights file, chosen by our own format key: the
// weights a ranzcr checkpoint validated (ema.* when the run kept an EMA,
// else model.*), or every tensor of a plain (timm,
// PyTorch, best.safetensors) safetensors file, whatever its metadata. For
// model.pretrained, stage.init, stage.teacher, eval and predict.
NamedTensors read_model_weights(const std::string& path);

// model.pretrained: timm-named weights (a file tools/export_timm.py wrote, or
// a model.safetensors as timm publishes it) loaded into `model` as timm's
// load_pretrained does: the first conv adapted to the model's input channels,
// a classifier with another class count left to the model's new head. Any
// other missing or unexpected weight, or a shape that differs, is an error
// naming the file.
TimmLoadReport load_pretrained(Module& model, const std::string& path);

// Throws, naming `path`, the tensor, the value and its index, when a
// floating tensor holds a NaN or an infinity.
void check_finite_tensors(const NamedTensors& tensors, const std::string& path);

}  // namespace rz
