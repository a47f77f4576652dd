// Moving weights between our modules and timm state dicts. Our conv weights
// are KRSC; timm's are OIHW: every 4-D parameter is permuted on the way in
// and out, so files we write load in timm and timm's load here.
#pragma once

#include <string>
#include <vector>

#include "engine/module.h"

namespace rz {

struct TimmLoadReport {
  std::vector<std::string> missing;     // in the model, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the model
  std::vector<std::string> dropped;     // classifier weights skipped: class count differs
  std::vector<std::string> adapted;     // first conv summed over input channels (RGB -> gray)
};

// Loads a timm-named state dict (OIHW conv weights, any float dtype) into
// `model`, as timm's load_pretrained does:
//  - fc.* is dropped when its class count differs from the model's;
//  - a 3-channel first conv loading into a 1-channel model is summed over the
//    input channels (timm adapt_input_conv);
//  - num_batches_tracked is loaded when present and never reported missing.
// With strict, any other missing or unexpected name is an error listing them.
TimmLoadReport load_timm_state_dict(Module& model, const NamedTensors& state, bool strict = true);

// The model's state dict in timm's layout: CPU, OIHW conv weights, fp32
// parameters (buffers keep their dtype). Ready for save_safetensors.
NamedTensors timm_state_dict(const Module& model);

// OIHW <-> KRSC for one 4-D weight.
Tensor oihw_to_krsc(const Tensor& w);
Tensor krsc_to_oihw(const Tensor& w);

}  // namespace rz
