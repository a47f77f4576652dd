#include "train/tiny_example.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "engine/autograd.h"
#include "engine/lr_schedule.h"
#include "engine/nn.h"
#include "engine/optim.h"

namespace rz {

namespace {
constexpr int64_t kLabels = 4;

// Draws `count` images [count, S, S, 3] and their labels [count, 4].
void make_images(int64_t count, int64_t S, Generator& gen, Tensor& images, Tensor& labels) {
  images = Tensor::empty({count, S, S, 3});
  labels = Tensor::zeros({count, kLabels});
  float* px = images.data<float>();
  float* py = labels.data<float>();
  for (int64_t n = 0; n < count; ++n) {
    float* img = px + n * S * S * 3;
    for (int64_t i = 0; i < S * S * 3; ++i) img[i] = static_cast<float>(gen.normal(0.0, 0.35));
    auto paint = [&](int64_t y, int64_t x, float v) {
      if (y < 0 || y >= S || x < 0 || x >= S) return;
      for (int64_t c = 0; c < 3; ++c) img[(y * S + x) * 3 + c] += v;
    };
    for (int64_t k = 0; k < kLabels; ++k) {
      if (gen.uniform() < 0.5) continue;
      py[n * kLabels + k] = 1.0f;
      const int64_t y0 = 2 + static_cast<int64_t>(gen.below(static_cast<uint64_t>(S - 8)));
      const int64_t x0 = 2 + static_cast<int64_t>(gen.below(static_cast<uint64_t>(S - 8)));
      const float v = static_cast<float>(gen.uniform(0.8, 1.4));
      for (int64_t t = 0; t < 6; ++t) {
        switch (k) {
          case 0: paint(y0, x0 + t, v); break;      // horizontal bar
          case 1: paint(y0 + t, x0, v); break;      // vertical bar
          case 2: paint(y0 + t, x0 + t, v); break;  // diagonal bar
          default:                                  // 2x2 blob, brighter
            if (t < 4) paint(y0 + t / 2, x0 + t % 2, 1.5f * v);
        }
      }
    }
  }
}

}  // namespace

TinySeNet::TinySeNet(int64_t in_channels, int64_t c1, int64_t c2, int64_t se_hidden,
                     int64_t labels, Generator& g) {
  conv1 = register_module("conv1", std::make_shared<Conv2d>(in_channels, c1, 3, g, 1, 1));
  bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(c1));
  conv2 = register_module("conv2", std::make_shared<Conv2d>(c1, c2, 3, g, 2, 1));
  bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(c2));
  se_fc1 = register_module("se_fc1", std::make_shared<Linear>(c2, se_hidden, g));
  se_fc2 = register_module("se_fc2", std::make_shared<Linear>(se_hidden, c2, g));
  fc = register_module("fc", std::make_shared<Linear>(c2, labels, g));
}

Tensor TinySeNet::forward(const Tensor& x) {
  Tensor h = relu((*bn1)((*conv1)(x)));
  h = relu((*bn2)((*conv2)(h)));
  Tensor s = sigmoid((*se_fc2)(relu((*se_fc1)(global_avg_pool(h)))));
  return (*fc)(global_avg_pool(channel_scale(h, s)));
}

TinyExampleResult run_tiny_example(const TinyExampleOptions& opt,
                                   const std::function<void(const std::string&)>& log) {
  RZ_CHECK(opt.device.is_cpu(), "the tiny example runs on the CPU backend (got ",
           opt.device.str(), ")");
  RZ_CHECK(opt.image_size >= 10, "tiny example: image size must be >= 10, got ", opt.image_size);
  RZ_CHECK(opt.batch >= 2 && opt.train_images >= opt.batch && opt.test_images >= 1,
           "tiny example: need batch >= 2 and at least one batch of training images");
  const auto t0 = std::chrono::steady_clock::now();
  Generator gen(opt.seed);
  Tensor train_x, train_y, test_x, test_y;
  make_images(opt.train_images, opt.image_size, gen, train_x, train_y);
  make_images(opt.test_images, opt.image_size, gen, test_x, test_y);

  TinySeNet net(3, 16, 32, 8, kLabels, gen);
  Adam optim(net.parameters(), AdamHyper{.lr = opt.lr, .weight_decay = 0, .decoupled = true});
  const int64_t steps_per_epoch = opt.train_images / opt.batch;
  LrSchedule sched;
  sched.kind = LrSchedule::Kind::cosine;
  sched.base_lr = opt.lr;
  sched.warmup_steps = steps_per_epoch / 2;
  sched.warmup_init_lr = opt.lr / 10;
  sched.total_steps = steps_per_epoch * opt.epochs;
  sched.min_lr = opt.lr / 100;

  TinyExampleResult result;
  int64_t step = 0;
  char line[256];
  for (int64_t epoch = 0; epoch < opt.epochs; ++epoch) {
    net.train();
    double epoch_loss = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      Tensor x = train_x.narrow0(b * opt.batch, opt.batch);
      Tensor y = train_y.narrow0(b * opt.batch, opt.batch);
      optim.set_lr(lr_at(sched, step));
      optim.zero_grad();
      Tensor loss = bce_with_logits(net(x), y);
      const double l = loss.item();
      RZ_CHECK(std::isfinite(l), "tiny example: non-finite loss ", l, " at step ", step);
      if (step == 0) result.first_train_loss = l;
      epoch_loss += l;
      loss.backward();
      optim.step();
    }
    result.final_train_loss = epoch_loss / static_cast<double>(steps_per_epoch);

    net.eval();
    NoGradGuard no_grad;
    Tensor logits = net(test_x);
    result.test_loss = bce_with_logits(logits, test_y).item();
    const float* pl = logits.data<float>();
    const float* pt = test_y.data<float>();
    int64_t correct = 0;
    for (int64_t i = 0; i < logits.numel(); ++i) correct += (pl[i] > 0) == (pt[i] > 0.5f);
    result.test_accuracy = static_cast<double>(correct) / static_cast<double>(logits.numel());
    std::snprintf(line, sizeof line,
                  "epoch %2lld/%lld  lr %.2e  train BCE %.4f  held-out BCE %.4f  held-out "
                  "accuracy %5.1f%%",
                  static_cast<long long>(epoch + 1), static_cast<long long>(opt.epochs),
                  optim.lr(), result.final_train_loss, result.test_loss,
                  100.0 * result.test_accuracy);
    log(line);
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace rz
