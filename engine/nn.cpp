#include "engine/nn.h"

#include "engine/comm.h"

#include <cmath>

namespace rz {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& gen,
               int64_t stride, int64_t padding)
    : opt{stride, padding} {
  RZ_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0, "Conv2d(", in_channels, ", ",
           out_channels, ", kernel ", kernel, ")");
  const double fan_out = static_cast<double>(out_channels * kernel * kernel);
  weight = register_parameter(
      "weight", Tensor::normal({out_channels, kernel, kernel, in_channels}, 0.0,
                               std::sqrt(2.0 / fan_out), gen));
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps_, double momentum_)
    : eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
}

void BatchNorm2d::count_batch() {
  if (num_batches_tracked.device().is_cpu()) {
    ++*num_batches_tracked.data<int64_t>();
    num_batches_tracked.bump_version();
  } else {  // only if moved by hand: Module::to keeps integer buffers on the host
    num_batches_tracked.fill_(num_batches_tracked.item() + 1);
  }
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (is_training()) count_batch();
  const BatchNormOptions opt{is_training(), momentum, eps};
  if (sync && opt.training) return sync_batch_norm2d(x, weight, bias, running_mean, running_var, opt, *sync);
  return batch_norm2d(x, weight, bias, running_mean, running_var, opt);
}

int64_t set_sync_batch_norm(Module& root, const std::shared_ptr<Communicator>& comm) {
  int64_t n = 0;
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&root)) {
    bn->sync = comm;
    ++n;
  }
  for (const auto& [name, child] : root.named_children()) n += set_sync_batch_norm(*child, comm);
  return n;
}

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool with_bias) {
  RZ_CHECK(in_features > 0 && out_features > 0, "Linear(", in_features, ", ", out_features, ")");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight",
                              Tensor::uniform({out_features, in_features}, -bound, bound, gen));
  if (with_bias)
    bias = register_parameter("bias", Tensor::uniform({out_features}, -bound, bound, gen));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [name, m] : named_children()) h = m->forward(h);
  return h;
}

}  // namespace rz
