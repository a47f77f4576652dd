// `ranzcr info`: what a model costs, from its configuration.
#pragma once

#include <cstdint>
#include <string>

namespace rz {

struct InfoOptions {
  std::string model = "seresnet152d";
  int64_t image_size = 512;
  int64_t num_classes = 11;
  int64_t in_chans = 3;
  int64_t batch = 16;                 // for the activation-memory estimate
  int64_t activation_bytes = 2;       // bf16 activations (4 for fp32)
};

// A table: parameters, GMACs per image, output shape and saved activations
// per stage, then totals and the training-batch activation memory.
std::string model_info_report(const InfoOptions& opt);

}  // namespace rz
