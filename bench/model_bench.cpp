// Forward + backward time per image of a model on the CPU backend (fp32):
// one training step (train-mode BN, BCE on 11 labels, backward; with
// --optim sgd also the SGD update, lr 0.01, momentum 0.9, weight decay 1e-4,
// and zero_grad), warm-up then the median of several steps. --eval times the
// eval-mode forward instead (no autograd). Achieved GFLOP/s counts
// 3 x forward MACs x 2 for a step (fwd + dgrad + wgrad), 2 x MACs for --eval.
//
//   model_bench                                  # the two default configurations
//   model_bench --model seresnet50 --img-size 128 --batch 4 --reps 5 --threads 2
//   model_bench --model seresnet152d --img-size 256 --batch 2 --optim sgd --json out.json
//   model_bench ... --fused                      # model.fused_se, fused_bn and fused_conv_bn
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/optim.h"
#include "models/seresnet.h"

namespace {

struct Config {
  std::string model;
  int64_t size, batch;
};

struct Mode {
  bool sgd = false, eval = false, fused = false;
  std::string json;
};

void run(const Config& c, int reps, const Mode& mode) {
  rz::ResNetConfig cfg = rz::resnet_config(c.model);
  cfg.num_classes = 11;
  cfg.fused_se = cfg.fused_bn = cfg.fused_conv_bn = mode.fused;
  auto model = rz::create_resnet(cfg, 0);
  if (mode.eval) model->eval();
  else model->train();
  std::unique_ptr<rz::Sgd> sgd;
  if (mode.sgd) {
    std::vector<rz::Tensor> params;
    for (const auto& [name, p] : model->named_parameters()) params.push_back(p);
    sgd = std::make_unique<rz::Sgd>(params, rz::SgdHyper{.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4});
  }
  rz::Generator gen(1);
  rz::Tensor x = rz::Tensor::normal({c.batch, c.size, c.size, 3}, 0, 1, gen);
  rz::Tensor y = rz::Tensor::zeros({c.batch, 11});
  double macs = 0;
  for (const auto& s : rz::resnet_cost(cfg, c.size)) macs += s.macs;

  std::vector<double> ms;
  for (int r = 0; r < reps + 1; ++r) {  // the first step is warm-up
    if (!mode.sgd) model->zero_grad();
    const auto t0 = std::chrono::steady_clock::now();
    if (mode.eval) {
      rz::NoGradGuard no_grad;
      rz::Tensor logits = model->forward(x);
    } else {
      rz::Tensor loss = rz::bce_with_logits(model->forward(x), y);
      loss.backward();
      if (sgd) {
        sgd->step();
        sgd->zero_grad();
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double med = sorted[sorted.size() / 2];
  const double per_image = med / static_cast<double>(c.batch);
  const double gflops = (mode.eval ? 2.0 : 6.0) * macs * static_cast<double>(c.batch) / (med * 1e-3) / 1e9;
  const char* what = mode.eval ? "eval fwd" : (mode.sgd ? "step+sgd" : "step");
  std::printf("%-14s %4lldx%-4lld batch %3lld  %s %9.1f ms (min %.1f, max %.1f)  %8.2f ms/image  "
              "%7.2f images/s  %6.1f GFLOP/s%s\n",
              c.model.c_str(), static_cast<long long>(c.size), static_cast<long long>(c.size),
              static_cast<long long>(c.batch), what, med, sorted.front(), sorted.back(), per_image,
              1000.0 / per_image, gflops, mode.fused ? "  (fused_se, fused_bn, fused_conv_bn)" : "");
  std::fflush(stdout);
  if (!mode.json.empty()) {
    const nlohmann::json j = {{"bench", "model_bench"}, {"model", c.model},  {"img_size", c.size},
                              {"batch", c.batch},       {"mode", what},      {"fused", mode.fused},
                              {"threads", omp_get_max_threads()}, {"median_ms", med}, {"ms", ms}};
    std::ofstream f(mode.json);
    f << j.dump() << "\n";
    if (!f.good()) throw std::runtime_error("cannot write " + mode.json);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Config> configs;
  Config custom{"", 128, 4};
  int reps = 5;
  Mode mode;
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
    else if (a == "--optim" && next() == "sgd") mode.sgd = true;
    else if (a == "--eval") mode.eval = true;
    else if (a == "--fused") mode.fused = true;
    else if (a == "--json") mode.json = next();
    else {
      std::fprintf(stderr,
                   "usage: model_bench [--model NAME --img-size S --batch B] [--reps N] [--threads T] "
                   "[--optim sgd | --eval] [--fused] [--json FILE]\n");
      return 2;
    }
  }
  if (!custom.model.empty()) configs.push_back(custom);
  else configs = {{"seresnet_tiny", 64, 16}, {"seresnet50", 128, 4}};
  std::printf("CPU forward+backward, fp32, %d threads, median of %d steps after 1 warm-up\n",
              omp_get_max_threads(), reps);
  try {
    for (const auto& c : configs) run(c, reps, mode);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
