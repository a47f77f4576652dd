#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>

#include "engine/autograd.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "train/checkpoint.h"

using namespace rz;

namespace {
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rz_ckpt_" + std::to_string(::getpid()) + "_" + name))
      .string();
}
void train_steps(ResNet& m, Optimizer& opt, Generator& gen, int steps) {
  for (int i = 0; i < steps; ++i) {
    Tensor x = Tensor::normal({2, 32, 32, 3}, 0, 1, gen);
    Tensor y = Tensor::zeros({2, 11});
    opt.zero_grad();
    bce_with_logits(m.forward(x), y).backward();
    opt.step();
  }
}
}  // namespace

TEST_CASE("checkpoint: save, load and continue bit for bit") {
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  cfg.drop_rate = 0.2;
  auto a = create_resnet(cfg, 1);
  Adam opt_a(a->parameters(), AdamHyper{.lr = 1e-3, .weight_decay = 0.01, .decoupled = true});
  Generator data_a(5);
  train_steps(*a, opt_a, data_a, 2);

  TrainState st;
  st.epoch = 3;
  st.step = 2;
  st.batch_in_epoch = 1;
  st.best_metric = 0.75;
  st.best_epoch = 2;
  st.rng["data"] = data_a.state();
  st.rng["dropout"] = a->dropout_generator().state();
  st.config_toml = "[run]\nname = \"x\"\n";
  const std::string path = temp_path("a.ckpt");
  save_checkpoint(path, *a, nullptr, &opt_a, st);

  auto b = create_resnet(cfg, 99);  // different init: everything must come from the file
  Adam opt_b(b->parameters(), AdamHyper{.lr = 1e-3, .weight_decay = 0.01, .decoupled = true});
  const TrainState back = load_checkpoint(path, *b, nullptr, &opt_b);
  CHECK(back.epoch == 3);
  CHECK(back.step == 2);
  CHECK(back.batch_in_epoch == 1);
  CHECK(back.best_metric == 0.75);
  CHECK(back.config_toml == st.config_toml);
  CHECK(read_checkpoint_state(path).best_epoch == 2);
  Generator data_b(0);
  data_b.set_state(back.rng.at("data"));
  b->dropout_generator().set_state(back.rng.at("dropout"));

  train_steps(*a, opt_a, data_a, 2);
  train_steps(*b, opt_b, data_b, 2);
  const auto sa = a->state_dict(), sb = b->state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CAPTURE(sa[i].first);
    CHECK(std::memcmp(sa[i].second.raw_data(), sb[i].second.raw_data(), sa[i].second.nbytes()) == 0);
  }
  // The model part is a timm state dict.
  const auto w = checkpoint_weights(path);
  CHECK(std::any_of(w.begin(), w.end(), [](const auto& p) {
    return p.first == "conv1.0.weight" && p.second.shape() == Shape{8, 3, 3, 3};  // OIHW
  }));
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: damaged or foreign files are refused with the path") {
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  auto m = create_resnet(cfg, 1);
  const std::string path = temp_path("b.ckpt");
  save_checkpoint(path, *m, nullptr, nullptr, TrainState{});
  // truncated
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 100);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *m, nullptr, nullptr), doctest::Contains(path.c_str()), Error);
  // a plain weights file is not a checkpoint
  save_safetensors(path, {{"w", Tensor::zeros({2})}});
  CHECK_THROWS_WITH_AS(read_checkpoint_state(path), doctest::Contains("not a ranzcr checkpoint"), Error);
  // a checkpoint for another model names the mismatch
  save_checkpoint(path, *m, nullptr, nullptr, TrainState{});
  auto other = create_resnet(resnet_config("seresnet_tiny_basic"), 1);
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *other, nullptr, nullptr), doctest::Contains(path.c_str()), Error);
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: optimizer state is required when asked for, even when it is empty") {
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto m = create_resnet(cfg, 1);
  const std::string path = temp_path("c.ckpt");
  // SGD without momentum has no state tensors: the file still says it was saved with one.
  Sgd plain(m->parameters(), SgdHyper{.lr = 0.1, .momentum = 0.0});
  Generator gen(2);
  train_steps(*m, plain, gen, 1);
  REQUIRE(plain.state().empty());
  save_checkpoint(path, *m, nullptr, &plain, TrainState{});
  CHECK_NOTHROW(load_checkpoint(path, *m, nullptr, &plain));
  // Saved without an optimizer: refused when one is given, fine without.
  save_checkpoint(path, *m, nullptr, nullptr, TrainState{});
  CHECK_THROWS_WITH_AS(load_checkpoint(path, *m, nullptr, &plain), doctest::Contains("holds no optimizer state"), Error);
  CHECK_NOTHROW(load_checkpoint(path, *m, nullptr, nullptr));
  // A file from before the "optimizer" key: its optim.* tensors are enough.
  Adam adam(m->parameters(), AdamHyper{.lr = 1e-3});
  train_steps(*m, adam, gen, 1);
  save_checkpoint(path, *m, nullptr, &adam, TrainState{});
  auto file = load_safetensors(path);
  REQUIRE(file.metadata.erase("optimizer") == 1);
  save_safetensors(path, file.tensors, file.metadata);
  CHECK_NOTHROW(load_checkpoint(path, *m, nullptr, &adam));
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: weights files are told apart by our format key, not by the absence of others") {
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto m = create_resnet(cfg, 1);
  const std::string path = temp_path("d.safetensors");
  CHECK(is_ranzcr_checkpoint({{"format", kCheckpointFormat}}, path));
  CHECK_FALSE(is_ranzcr_checkpoint({{"format", "pt"}}, path));
  CHECK_FALSE(is_ranzcr_checkpoint({}, path));
  CHECK_FALSE(is_ranzcr_checkpoint({{"format", "ranzcr"}}, path));
  CHECK_THROWS_WITH_AS(is_ranzcr_checkpoint({{"format", "ranzcr-checkpoint-7"}}, path),
                       doctest::Contains("another version"), Error);
  for (const std::map<std::string, std::string>& meta :
       {std::map<std::string, std::string>{{"format", "pt"}}, std::map<std::string, std::string>{},
        std::map<std::string, std::string>{{"format", "np"}, {"note", "x"}}}) {
    save_safetensors(path, timm_state_dict(*m), meta);
    const auto w = read_model_weights(path);
    CHECK(w.size() == timm_state_dict(*m).size());
    CHECK_NOTHROW(load_timm_state_dict(*m, w));
  }
  // f64 and bf16 non-finite values are found too.
  save_safetensors(path, {{"a", Tensor::zeros({3}, DType::F64)}, {"b", Tensor::full({2}, -std::numeric_limits<double>::infinity())}});
  CHECK_THROWS_WITH_AS(read_model_weights(path), doctest::Contains("tensor 'b' holds a non-finite value (-inf"), Error);
  std::filesystem::remove(path);
}
