// A small end-to-end example that shows the engine learning: a conv net with
// batch norm and a squeeze-excitation scale learns, from synthetic 16x16
// images, which of four shapes (horizontal bar, vertical bar, diagonal bar,
// bright blob) each image contains — a multi-label task with BCE-with-logits,
// Adam and a warmup+cosine schedule, scored on held-out images.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "engine/error.h"

#include "engine/device.h"

namespace rz {

struct TinyExampleOptions {
  int64_t train_images = 1024;
  int64_t test_images = 256;
  int64_t image_size = 16;
  int64_t batch = 32;
  int64_t epochs = 12;
  double lr = 2e-2;
  uint64_t seed = 0;
  Device device = Device::cpu();
};

struct TinyExampleResult {
  double first_train_loss = 0, final_train_loss = 0;
  double test_loss = 0;
  double test_accuracy = 0;  // per-label accuracy of sign(logit), averaged
  double seconds = 0;
};

// Trains and evaluates; `log` receives one human-readable line per epoch.
TinyExampleResult run_tiny_example(const TinyExampleOptions& opt,
                                   const std::function<void(const std::string&)>& log);

}  // namespace rz
