// Forward + backward time per image of a model on the CPU backend (fp32):
// one training step (train-mode BN, BCE on 11 labels, backward, no optimizer),
// warm-up then the median of several steps. Achieved GFLOP/s counts
// 3 x forward MACs x 2 (the usual fwd + dgrad + wgrad estimate).
//
//   model_bench                                  # the two default configurations
//   model_bench --model seresnet50 --img-size 128 --batch 4 --reps 5 --threads 2
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "models/seresnet.h"

namespace {

struct Config {
  std::string model;
  int64_t size, batch;
};

void run(const Config& c, int reps) {
  rz::ResNetConfig cfg = rz::resnet_config(c.model);
  cfg.num_classes = 11;
  auto model = rz::create_resnet(cfg, 0);
  model->train();
  rz::Generator gen(1);
  rz::Tensor x = rz::Tensor::normal({c.batch, c.size, c.size, 3}, 0, 1, gen);
  rz::Tensor y = rz::Tensor::zeros({c.batch, 11});
  double macs = 0;
  for (const auto& s : rz::resnet_cost(cfg, c.size)) macs += s.macs;

  std::vector<double> ms;
  for (int r = 0; r < reps + 1; ++r) {  // the first step is warm-up
    model->zero_grad();
    const auto t0 = std::chrono::steady_clock::now();
    rz::Tensor loss = rz::bce_with_logits(model->forward(x), y);
    loss.backward();
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double per_image = med / static_cast<double>(c.batch);
  const double gflops = 3.0 * 2.0 * macs * static_cast<double>(c.batch) / (med * 1e-3) / 1e9;
  std::printf("%-14s %4lldx%-4lld batch %3lld  step %9.1f ms (min %.1f, max %.1f)  %8.2f ms/image  "
              "%7.2f images/s  %6.1f GFLOP/s\n",
              c.model.c_str(), static_cast<long long>(c.size), static_cast<long long>(c.size),
              static_cast<long long>(c.batch), med, ms.front(), ms.back(), per_image,
              1000.0 / per_image, gflops);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Config> configs;
  Config custom{"", 128, 4};
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "model_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") custom.model = next();
    else if (a == "--img-size") custom.size = std::stoll(next());
    else if (a == "--batch") custom.batch = std::stoll(next());
    else if (a == "--reps") reps = std::max(1, std::stoi(next()));
    else if (a == "--threads") omp_set_num_threads(std::stoi(next()));
    else {
      std::fprintf(stderr, "usage: model_bench [--model NAME --img-size S --batch B] [--reps N] [--threads T]\n");
      return 2;
    }
  }
  if (!custom.model.empty()) configs.push_back(custom);
  else configs = {{"seresnet_tiny", 64, 16}, {"seresnet50", 128, 4}};
  std::printf("CPU forward+backward, fp32, %d threads, median of %d steps after 1 warm-up\n",
              omp_get_max_threads(), reps);
  try {
    for (const auto& c : configs) run(c, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
