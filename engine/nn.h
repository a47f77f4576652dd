// The basic layers. Parameter names and init follow PyTorch/timm so that
// state dicts line up: Conv2d "weight" (stored KRSC here), BatchNorm2d
// "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
// Linear "weight", "bias". Sequential names its children "0", "1", ...
#pragma once

#include "engine/module.h"
#include "engine/ops.h"

namespace rz {

class Conv2d : public Module {
 public:
  // Weight [out, k, k, in], kaiming-normal with fan_out and ReLU gain:
  // std = sqrt(2 / (out * k * k)) (timm's ResNet init).
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& gen,
         int64_t stride = 1, int64_t padding = 0);
  Tensor forward(const Tensor& x) override { return conv2d(x, weight, opt); }
  std::string type_name() const override { return "Conv2d"; }
  Tensor weight;
  Conv2dOptions opt;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  // Training forward counts the batch in num_batches_tracked (a host counter).
  void count_batch();
  double eps, momentum;
  // SyncBN: when set, training statistics are those of every rank of this
  // communicator (sync_batch_norm2d).
  std::shared_ptr<Communicator> sync;
};

// Sets (or clears, with nullptr) the SyncBN communicator of every
// BatchNorm2d under `root`; returns how many there are.
int64_t set_sync_batch_norm(Module& root, const std::shared_ptr<Communicator>& comm);

class Linear : public Module {
 public:
  // PyTorch's default init: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }
  std::string type_name() const override { return "Linear"; }
  Tensor weight, bias;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

// Parameter-free layers; they exist as modules so that positional names in
// timm's Sequentials (conv1.2 is a ReLU, downsample.0 an AvgPool2d) line up.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pool2dOptions o) : opt(o) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, opt); }
  std::string type_name() const override { return "MaxPool2d"; }
  Pool2dOptions opt;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pool2dOptions o) : opt(o) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, opt); }
  std::string type_name() const override { return "AvgPool2d"; }
  Pool2dOptions opt;
};

class Sequential : public Module {
 public:
  Sequential() = default;
  template <typename M> std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    auto name = std::to_string(size_++);
    return register_module(std::move(name), std::move(m));
  }
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  int64_t size() const { return size_; }

 private:
  int64_t size_ = 0;
};

}  // namespace rz
