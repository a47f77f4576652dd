// A small end-to-end example that shows the engine learning: a conv net with
// batch norm and a squeeze-excitation scale learns, from synthetic 16x16
// images, which of four shapes (horizontal bar, vertical bar, diagonal bar,
// bright blob) each image contains — a multi-label task with BCE-with-logits,
// Adam and a warmup+cosine schedule, scored on held-out images.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/nn.h"

namespace rz {

// conv3x3(in->c1)+BN+ReLU, conv3x3 stride 2 (c1->c2)+BN+ReLU, an SE scale
// (global pool -> fc c2->se_hidden -> ReLU -> fc -> sigmoid -> channel scale),
// global pool, fc -> labels.
struct TinySeNet : Module {
  TinySeNet(int64_t in_channels, int64_t c1, int64_t c2, int64_t se_hidden, int64_t labels,
            Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "TinySeNet"; }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<Linear> se_fc1, se_fc2, fc;
};

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
