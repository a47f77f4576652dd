// The ResNet / SE-ResNet family exactly as timm builds it (timm/models/resnet.py),
// so that parameter names, shapes and init line up with timm state dicts:
//
//   stem:  plain  conv1 7x7/2 -> bn1 -> act1 -> maxpool 3x3/2
//          deep   conv1 = Sequential(conv3x3/2 in->w, BN, ReLU, conv3x3 w->w, BN, ReLU,
//                                    conv3x3 w->2w) -> bn1 -> act1 -> maxpool   (w = stem_width)
//   layer1..4: blocks (BasicBlock expansion 1, Bottleneck expansion 4); the
//          first block of a stage strides (2 for layers 2-4, on the 3x3 conv)
//          and gets a shortcut `downsample` when the shape changes:
//            plain    Sequential(conv1x1/stride, BN)                    -> downsample.0/.1
//            avg_down Sequential(AvgPool2d(2, stride, ceil, no pad count)
//                                or Identity, conv1x1, BN)              -> downsample.1/.2
//          SE after the last BN, before the residual add:
//            se.fc1 (1x1 conv with bias, C -> rd) -> ReLU -> se.fc2 (rd -> C) -> sigmoid -> scale,
//            rd = max(8, int(C/16 + 4) // 8 * 8)
//   head:  global average pool -> optional dropout -> fc
//
// Conv weights are stored KRSC here; the SE 1x1 convs are [rd, 1, 1, C] and
// run as linear layers on the pooled [N, C] vector.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "engine/nn.h"

namespace rz {

struct ResNetConfig {
  std::string name;
  bool bottleneck = true;                      // Bottleneck (x4) or BasicBlock (x1)
  std::array<int64_t, 4> layers{3, 4, 6, 3};   // blocks per stage
  std::array<int64_t, 4> channels{64, 128, 256, 512};  // planes per stage
  bool deep_stem = false;                      // timm stem_type='deep'
  int64_t stem_width = 64;                     // deep stem width (32 for the *d models)
  bool avg_down = false;                       // average-pool shortcut (the *d models)
  bool se = false;                             // squeeze-excitation in every block
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  double drop_rate = 0.0;                      // dropout before fc (training only)
  // Bottleneck ends (bn3, SE, residual add, ReLU) as one fused op
  // (se_block_tail in engine/ops.h); same values, fewer passes over memory.
  bool fused_se = false;
  // bn1 + ReLU and bn2 + ReLU of every block as one fused op each (batch_norm_act).
  bool fused_bn = false;
  // conv1 + bn1 + ReLU and conv2 + bn2 + ReLU of every block as conv_bn_act:
  // on CUDA with a native conv plan, the conv epilogue takes the BN statistics
  // (training) or the whole eval BN + ReLU. Implies fused_bn for those sites.
  // With fused_se, conv3's epilogue also hands the SE tail its per-image
  // sums (conv2d_with_sums), so the tail skips its statistics pass.
  bool fused_conv_bn = false;

  int64_t expansion() const { return bottleneck ? 4 : 1; }
  int64_t num_features() const { return channels[3] * expansion(); }
};

// Known names: seresnet18, seresnet34, seresnet50, seresnet101, seresnet152,
// seresnet152d, seresnet200d, resnet26d, resnet50d, resnet152d, resnet200d,
// and the small test/demo configurations seresnet_tiny (bottleneck, widths
// 8/16/32/64, one block per stage, deep stem 8, avg_down, SE) and
// seresnet_tiny_basic (the same with BasicBlocks). Throws rz::Error listing
// the names for anything else.
ResNetConfig resnet_config(const std::string& name);
std::vector<std::string> resnet_names();

// The SE reduction width for C channels.
int64_t se_reduced_channels(int64_t channels);

// A 1x1 convolution with bias applied to a pooled [N, C_in] vector: weight
// [C_out, 1, 1, C_in] (so it loads as timm's Conv2d), computed as a linear layer.
// Init as timm leaves SE convs: kaiming-normal fan_out weight, PyTorch's
// default U(-1/sqrt(C_in), 1/sqrt(C_in)) bias.
class PointwiseConv : public Module {
 public:
  PointwiseConv(int64_t in_channels, int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;  // [N, C_in] -> [N, C_out]
  std::string type_name() const override { return "Conv2d"; }
  Tensor weight, bias;
};

class SqueezeExcite : public Module {
 public:
  SqueezeExcite(int64_t channels, Generator& gen);
  Tensor forward(const Tensor& x) override;  // x * sigmoid(fc2(relu(fc1(mean_hw(x)))))
  std::string type_name() const override { return "SEModule"; }
  std::shared_ptr<PointwiseConv> fc1, fc2;
};

class ResNetBlock : public Module {
 public:
  ResNetBlock(const ResNetConfig& cfg, int64_t inplanes, int64_t planes, int64_t stride,
              Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return bottleneck ? "Bottleneck" : "BasicBlock"; }
  // The block's last BN, zeroed at init so each residual branch starts as identity.
  std::shared_ptr<BatchNorm2d> last_bn() const { return bottleneck ? bn3 : bn2; }

  bool bottleneck;
  bool fused_se = false;  // ResNetConfig::fused_se (bottleneck blocks with SE only)
  bool fused_bn = false;  // ResNetConfig::fused_bn
  bool fused_conv_bn = false;  // ResNetConfig::fused_conv_bn
  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<SqueezeExcite> se;
  std::shared_ptr<Sequential> downsample;
};

class ResNet : public Module {
 public:
  ResNet(const ResNetConfig& cfg, Generator& gen);
  Tensor forward(const Tensor& x) override;            // NHWC images -> logits [N, num_classes]
  Tensor forward_features(const Tensor& x);            // -> final feature map [N, h, w, num_features]
  // The outputs of layer1..layer4 (stage i's at [i - 1]), each [N, h_i, w_i, C_i];
  // the last is forward_features(x). Stops after `stages` stages (1..4).
  std::vector<Tensor> forward_stages(const Tensor& x, int64_t stages = 4);
  Tensor forward_head(const Tensor& features);         // pool -> dropout -> fc
  std::string type_name() const override { return "ResNet"; }
  const ResNetConfig& config() const { return cfg_; }
  // Seeds the dropout mask stream (checkpoints store and restore it).
  Generator& dropout_generator() { return dropout_gen_; }

  std::shared_ptr<Module> conv1;  // Conv2d (plain stem) or Sequential (deep stem)
  std::shared_ptr<BatchNorm2d> bn1;
  std::shared_ptr<MaxPool2d> maxpool;
  std::array<std::shared_ptr<Sequential>, 4> layers;
  std::shared_ptr<Linear> fc;

 private:
  ResNetConfig cfg_;
  Generator dropout_gen_;
};

std::shared_ptr<ResNet> create_resnet(const ResNetConfig& cfg, uint64_t seed);

// Analytic cost of a model at a square input size, per image, from the
// configuration (no forward pass): parameters, multiply-accumulates of convs
// and fc layers, and the activation elements a training step keeps for
// backward, per stage.
struct StageCost {
  std::string name;  // "stem", "layer1".."layer4", "head"
  int64_t params = 0;
  double macs = 0;
  double activations = 0;  // elements saved for backward, per image
  int64_t out_h = 0, out_w = 0, out_c = 0;
};
std::vector<StageCost> resnet_cost(const ResNetConfig& cfg, int64_t image_size);

}  // namespace rz
