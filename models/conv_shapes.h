// Every convolution of a ResNet / SE-ResNet (models/seresnet.h) as the
// geometry its kernels see, computed from the configuration alone (no model is
// built), for the convolution benchmarks and the GPU tests of the native
// kernels. Forward order, as the model runs them: the stem convs, then per
// block conv1, conv2, conv3 (conv1, conv2 for BasicBlocks), se.fc1, se.fc2
// and the shortcut conv. Names are timm's module names ("conv1.0",
// "layer3.12.conv2", "layer2.0.downsample.1", "layer1.0.se.fc1"), i.e. the
// parameter name without ".weight"; weights are [K, R, S, C].
//
// SE fc1 / fc2 are listed as what timm declares them: 1x1 convolutions (with
// bias) on the pooled [N, 1, 1, C] map, flagged `se` (the model computes them
// as linear layers; the conv geometry ignores the bias).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "models/seresnet.h"

namespace rz {

struct ConvLayer {
  std::string name;
  Conv2dGeom geom;
  bool se = false;
};

// All convolutions for a batch of `batch` square images of img_size pixels.
std::vector<ConvLayer> resnet_conv_layers(const ResNetConfig& cfg, int64_t batch, int64_t img_size);

// Their geometries; with unique, each distinct geometry once, in order of
// first appearance.
std::vector<Conv2dGeom> resnet_conv_shapes(const ResNetConfig& cfg, int64_t batch, int64_t img_size,
                                           bool unique = true);

// Whether two geometries are the same convolution (every field equal).
bool same_conv_geom(const Conv2dGeom& a, const Conv2dGeom& b);

}  // namespace rz
