#include "models/seresnet.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda_context.h"

namespace rz {

namespace {
ResNetConfig make(std::string name, bool bottleneck, std::array<int64_t, 4> layers, bool d, bool se) {
  ResNetConfig c;
  c.name = std::move(name);
  c.bottleneck = bottleneck;
  c.layers = layers;
  c.deep_stem = d;
  c.stem_width = d ? 32 : 64;
  c.avg_down = d;
  c.se = se;
  return c;
}
}  // namespace

std::vector<std::string> resnet_names() {
  return {"seresnet18",  "seresnet34",   "seresnet50", "seresnet101",  "seresnet152",
          "seresnet152d", "seresnet200d", "resnet26d", "resnet50d",    "resnet152d",
          "resnet200d",  "seresnet_tiny", "seresnet_tiny_basic"};
}

ResNetConfig resnet_config(const std::string& name) {
  if (name == "seresnet18") return make(name, false, {2, 2, 2, 2}, false, true);
  if (name == "seresnet34") return make(name, false, {3, 4, 6, 3}, false, true);
  if (name == "seresnet50") return make(name, true, {3, 4, 6, 3}, false, true);
  if (name == "seresnet101") return make(name, true, {3, 4, 23, 3}, false, true);
  if (name == "seresnet152") return make(name, true, {3, 8, 36, 3}, false, true);
  if (name == "seresnet152d") return make(name, true, {3, 8, 36, 3}, true, true);
  if (name == "seresnet200d") return make(name, true, {3, 24, 36, 3}, true, true);
  if (name == "resnet26d") return make(name, true, {2, 2, 2, 2}, true, false);
  if (name == "resnet50d") return make(name, true, {3, 4, 6, 3}, true, false);
  if (name == "resnet152d") return make(name, true, {3, 8, 36, 3}, true, false);
  if (name == "resnet200d") return make(name, true, {3, 24, 36, 3}, true, false);
  if (name == "seresnet_tiny" || name == "seresnet_tiny_basic") {
    ResNetConfig c = make(name, name == "seresnet_tiny", {1, 1, 1, 1}, true, true);
    c.channels = {8, 16, 32, 64};
    c.stem_width = 8;
    return c;
  }
  std::string known;
  for (const auto& n : resnet_names()) known += (known.empty() ? "" : ", ") + n;
  RZ_THROW("unknown model '", name, "' (known: ", known, ")");
}

int64_t se_reduced_channels(int64_t channels) {
  // timm make_divisible(C / 16, 8, round_limit=0): max(8, int(C/16 + 4) // 8 * 8)
  const auto v = static_cast<int64_t>(static_cast<double>(channels) / 16.0 + 4.0);
  return std::max<int64_t>(8, v / 8 * 8);
}

PointwiseConv::PointwiseConv(int64_t in_channels, int64_t out_channels, Generator& gen) {
  weight = register_parameter(
      "weight", Tensor::normal({out_channels, 1, 1, in_channels}, 0.0,
                               std::sqrt(2.0 / static_cast<double>(out_channels)), gen));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels));
  bias = register_parameter("bias", Tensor::uniform({out_channels}, -bound, bound, gen));
}

Tensor PointwiseConv::forward(const Tensor& x) {
  return linear(x, reshape(weight, {weight.size(0), weight.size(3)}), bias);
}

SqueezeExcite::SqueezeExcite(int64_t channels, Generator& gen) {
  const int64_t rd = se_reduced_channels(channels);
  fc1 = register_module("fc1", std::make_shared<PointwiseConv>(channels, rd, gen));
  fc2 = register_module("fc2", std::make_shared<PointwiseConv>(rd, channels, gen));
}

Tensor SqueezeExcite::forward(const Tensor& x) {
  Tensor s = sigmoid((*fc2)(relu((*fc1)(global_avg_pool(x)))));
  return channel_scale(x, s);
}

ResNetBlock::ResNetBlock(const ResNetConfig& cfg, int64_t inplanes, int64_t planes,
                         int64_t stride, Generator& gen)
    : bottleneck(cfg.bottleneck), fused_se(cfg.fused_se && cfg.bottleneck && cfg.se), fused_bn(cfg.fused_bn),
      fused_conv_bn(cfg.fused_conv_bn) {
  const int64_t out = planes * cfg.expansion();
  if (bottleneck) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(inplanes, planes, 1, gen));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, gen, stride, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
    conv3 = register_module("conv3", std::make_shared<Conv2d>(planes, out, 1, gen));
    bn3 = register_module("bn3", std::make_shared<BatchNorm2d>(out));
  } else {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(inplanes, planes, 3, gen, stride, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, out, 3, gen, 1, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(out));
  }
  if (cfg.se) se = register_module("se", std::make_shared<SqueezeExcite>(out, gen));
  if (stride != 1 || inplanes != out) {
    downsample = std::make_shared<Sequential>();
    if (cfg.avg_down) {
      if (stride != 1)
        downsample->push_back(std::make_shared<AvgPool2d>(Pool2dOptions{2, stride, 0, true, false}));
      else
        downsample->push_back(std::make_shared<Identity>());
      downsample->push_back(std::make_shared<Conv2d>(inplanes, out, 1, gen));
    } else {
      downsample->push_back(std::make_shared<Conv2d>(inplanes, out, 1, gen, stride, 0));
    }
    downsample->push_back(std::make_shared<BatchNorm2d>(out));
    register_module("downsample", downsample);
  }
  last_bn()->weight.fill_(0.0);  // timm zero_init_last
}

namespace {
// relu(bn(x)) as one fused op or as the two ops.
Tensor bn_relu(BatchNorm2d& bn, const Tensor& x, bool fused) {
  if (!fused) return relu(bn(x));
  if (bn.is_training()) bn.count_batch();
  return batch_norm_act(x, Tensor(), bn.weight, bn.bias, bn.running_mean, bn.running_var,
                        {bn.is_training(), bn.momentum, bn.eps}, true);
}

// relu(bn(conv(x))): one conv_bn_act, or the conv and then bn_relu.
Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool fused_bn,
                    bool fused_conv_bn) {
  if (!fused_conv_bn) return bn_relu(bn, conv(x), fused_bn);
  if (bn.is_training()) bn.count_batch();
  return conv_bn_act(x, conv.weight, conv.opt, Tensor(), bn.weight, bn.bias, bn.running_mean,
                     bn.running_var, {bn.is_training(), bn.momentum, bn.eps}, true);
}
}  // namespace

Tensor ResNetBlock::forward(const Tensor& x) {
  Tensor h = conv_bn_relu(*conv1, *bn1, x, fused_bn, fused_conv_bn);
  if (fused_se) {
    h = conv_bn_relu(*conv2, *bn2, h, fused_bn, fused_conv_bn);
    // With fused_conv_bn conv3's epilogue may hand the SE tail its per-image
    // sums (undefined when it cannot: the tail then takes its own pass).
    ConvWithSums c3;
    if (fused_conv_bn)
      c3 = conv2d_with_sums(h, conv3->weight, conv3->opt, h.size(0));
    else
      c3.y = (*conv3)(h);
    const Tensor& t = c3.y;
    const Tensor shortcut = downsample ? (*downsample)(x) : x;
    if (bn3->is_training()) bn3->count_batch();
    const Tensor& w1 = se->fc1->weight;
    const Tensor& w2 = se->fc2->weight;
    NvtxRange range("se_block_tail");
    return se_block_tail(t, shortcut, bn3->weight, bn3->bias, bn3->running_mean, bn3->running_var,
                         reshape(w1, {w1.size(0), w1.size(3)}), se->fc1->bias,
                         reshape(w2, {w2.size(0), w2.size(3)}), se->fc2->bias,
                         {bn3->is_training(), bn3->momentum, bn3->eps}, c3.sums);
  }
  if (bottleneck) {
    h = conv_bn_relu(*conv2, *bn2, h, fused_bn, fused_conv_bn);
    h = (*bn3)((*conv3)(h));
  } else {
    h = (*bn2)((*conv2)(h));
  }
  if (se) h = (*se)(h);
  const Tensor shortcut = downsample ? (*downsample)(x) : x;
  return relu(add(h, shortcut));
}

ResNet::ResNet(const ResNetConfig& cfg, Generator& gen) : cfg_(cfg), dropout_gen_(gen.next_u64()) {
  RZ_CHECK(cfg.in_chans >= 1 && cfg.num_classes >= 1, "model ", cfg.name, ": in_chans ",
           cfg.in_chans, ", num_classes ", cfg.num_classes);
  RZ_CHECK(cfg.drop_rate >= 0 && cfg.drop_rate < 1, "model ", cfg.name, ": drop_rate ", cfg.drop_rate);
  int64_t inplanes = 64;
  if (cfg.deep_stem) {
    const int64_t w = cfg.stem_width;
    auto stem = std::make_shared<Sequential>();
    stem->push_back(std::make_shared<Conv2d>(cfg.in_chans, w, 3, gen, 2, 1));
    stem->push_back(std::make_shared<BatchNorm2d>(w));
    stem->push_back(std::make_shared<ReLU>());
    stem->push_back(std::make_shared<Conv2d>(w, w, 3, gen, 1, 1));
    stem->push_back(std::make_shared<BatchNorm2d>(w));
    stem->push_back(std::make_shared<ReLU>());
    stem->push_back(std::make_shared<Conv2d>(w, 2 * w, 3, gen, 1, 1));
    conv1 = register_module("conv1", stem);
    inplanes = 2 * w;
  } else {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(cfg.in_chans, 64, 7, gen, 2, 3));
  }
  bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(inplanes));
  maxpool = std::make_shared<MaxPool2d>(Pool2dOptions{3, 2, 1, false, true});
  for (int s = 0; s < 4; ++s) {
    auto stage = std::make_shared<Sequential>();
    const int64_t planes = cfg.channels[static_cast<size_t>(s)];
    for (int64_t b = 0; b < cfg.layers[static_cast<size_t>(s)]; ++b) {
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      stage->push_back(std::make_shared<ResNetBlock>(cfg, inplanes, planes, stride, gen));
      inplanes = planes * cfg.expansion();
    }
    layers[static_cast<size_t>(s)] = register_module("layer" + std::to_string(s + 1), stage);
  }
  fc = register_module("fc", std::make_shared<Linear>(inplanes, cfg.num_classes, gen));
}

Tensor ResNet::forward_features(const Tensor& x) { return forward_stages(x).back(); }

std::vector<Tensor> ResNet::forward_stages(const Tensor& x, int64_t stages) {
  RZ_CHECK(x.dim() == 4 && x.size(3) == cfg_.in_chans, "model ", cfg_.name, " expects NHWC input with ",
           cfg_.in_chans, " channels, got ", x.str());
  RZ_CHECK(stages >= 1 && stages <= 4, "forward_stages: stages must be 1..4, got ", stages);
  std::vector<Tensor> out;
  Tensor h = (*maxpool)(relu((*bn1)((*conv1)(x))));
  for (int64_t i = 0; i < stages; ++i) {
    h = (*layers[static_cast<size_t>(i)])(h);
    out.push_back(h);
  }
  return out;
}

Tensor ResNet::forward_head(const Tensor& features) {
  Tensor pooled = global_avg_pool(features);
  if (is_training() && cfg_.drop_rate > 0) pooled = dropout(pooled, cfg_.drop_rate, dropout_gen_);
  return (*fc)(pooled);
}

Tensor ResNet::forward(const Tensor& x) { return forward_head(forward_features(x)); }

std::shared_ptr<ResNet> create_resnet(const ResNetConfig& cfg, uint64_t seed) {
  Generator gen(seed);
  return std::make_shared<ResNet>(cfg, gen);
}

}  // namespace rz

namespace rz {

namespace {
// Follows one activation's shape through the network, adding each layer's
// parameters, MACs and saved activations to the current stage.
struct CostWalker {
  StageCost* stage = nullptr;
  int64_t h = 0, w = 0, c = 0;

  double size() const { return static_cast<double>(h * w * c); }
  void conv(int64_t out, int64_t k, int64_t stride, int64_t pad) {
    stage->activations += size();  // conv saves its input for the weight gradient
    h = (h + 2 * pad - k) / stride + 1;
    w = (w + 2 * pad - k) / stride + 1;
    stage->macs += static_cast<double>(h * w * out * k * k * c);
    stage->params += out * k * k * c;
    c = out;
  }
  void bn() {
    stage->activations += size();
    stage->params += 2 * c;
  }
  void relu() { stage->activations += size(); }
  void bn_relu() {
    bn();
    relu();
  }
  void se() {
    const int64_t rd = se_reduced_channels(c);
    stage->params += rd * c + rd + c * rd + c;
    stage->macs += static_cast<double>(2 * rd * c);
    stage->activations += size() + static_cast<double>(2 * (rd + c));  // x for the scale, fc inputs
  }
};
}  // namespace

std::vector<StageCost> resnet_cost(const ResNetConfig& cfg, int64_t image_size) {
  RZ_CHECK(image_size >= 32, "image size must be at least 32, got ", image_size);
  std::vector<StageCost> stages(6);
  stages[0].name = "stem";
  for (int s = 0; s < 4; ++s) stages[static_cast<size_t>(s + 1)].name = "layer" + std::to_string(s + 1);
  stages[5].name = "head";

  CostWalker x{&stages[0], image_size, image_size, cfg.in_chans};
  if (cfg.deep_stem) {
    x.conv(cfg.stem_width, 3, 2, 1);
    x.bn_relu();
    x.conv(cfg.stem_width, 3, 1, 1);
    x.bn_relu();
    x.conv(2 * cfg.stem_width, 3, 1, 1);
  } else {
    x.conv(64, 7, 2, 3);
  }
  x.bn_relu();
  x.h = (x.h + 2 - 3) / 2 + 1;  // maxpool 3x3/2 pad 1; argmax kept per output
  x.w = (x.w + 2 - 3) / 2 + 1;
  x.stage->activations += x.size();
  stages[0].out_h = x.h;
  stages[0].out_w = x.w;
  stages[0].out_c = x.c;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = cfg.channels[static_cast<size_t>(s)];
    const int64_t out = planes * cfg.expansion();
    x.stage = &stages[static_cast<size_t>(s + 1)];
    for (int64_t b = 0; b < cfg.layers[static_cast<size_t>(s)]; ++b) {
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      CostWalker shortcut = x;
      if (cfg.bottleneck) {
        x.conv(planes, 1, 1, 0);
        x.bn_relu();
        x.conv(planes, 3, stride, 1);
        x.bn_relu();
        x.conv(out, 1, 1, 0);
        x.bn();
      } else {
        x.conv(planes, 3, stride, 1);
        x.bn_relu();
        x.conv(out, 3, 1, 1);
        x.bn();
      }
      if (cfg.se) x.se();
      if (stride != 1 || shortcut.c != out) {
        if (cfg.avg_down && stride != 1) {
          shortcut.h = (shortcut.h + 1) / 2;  // 2x2/2 ceil mode
          shortcut.w = (shortcut.w + 1) / 2;
          shortcut.conv(out, 1, 1, 0);
        } else {
          shortcut.conv(out, 1, cfg.avg_down ? 1 : stride, 0);
        }
        shortcut.bn();
      }
      x.relu();  // after the residual add
    }
    x.stage->out_h = x.h;
    x.stage->out_w = x.w;
    x.stage->out_c = x.c;
  }
  StageCost& head = stages[5];
  head.params = x.c * cfg.num_classes + cfg.num_classes;
  head.macs = static_cast<double>(x.c * cfg.num_classes);
  head.activations = static_cast<double>(x.c);
  head.out_h = head.out_w = 1;
  head.out_c = cfg.num_classes;
  return stages;
}

}  // namespace rz
