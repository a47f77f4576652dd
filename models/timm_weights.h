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
  std::vector<std::string> adapted;     // first conv adapted to the model's input channels
  // "conv1.0.weight adapted from 3 to 1 input channels; fc.weight, fc.bias
  // dropped (a new 11-class head)": what a log line should say.
  std::string str() const;
};

// timm's adapt_input_conv: the first conv of weights pretrained on RGB, for a
// model with `in_chans` inputs. One channel: the sum over R, G and B (the
// response to a gray image replicated into three channels). Otherwise RGB is
// repeated to in_chans channels and scaled by 3 / in_chans. `weight` is OIHW
// with 3 input channels (or already in_chans: returned as is); any other
// count is an error naming `name`, where timm gives up too. Computed in fp32
// as timm computes it; returned in the weight's dtype.
Tensor adapt_input_conv(int64_t in_chans, const Tensor& weight, const std::string& name = "first conv");

// Loads a timm-named state dict (OIHW conv weights, any float dtype) into
// `model`, as timm's load_pretrained does:
//  - fc.* is dropped when its class count differs from the model's;
//  - the model's first conv (its first 4-D weight) is adapted when the file
//    has a different number of input channels (adapt_input_conv);
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
