#include "models/conv_shapes.h"

#include "engine/error.h"

namespace rz {

namespace {
// Follows one activation through the network, recording each convolution.
struct ShapeWalker {
  std::vector<ConvLayer>* out;
  int64_t batch, h, w, c;

  void conv(const std::string& name, int64_t k, int64_t kernel, int64_t stride, int64_t pad,
            bool se = false) {
    const Conv2dGeom g =
        make_conv2d_geom(batch, h, w, c, k, kernel, kernel, stride, stride, pad, pad);
    out->push_back({name, g, se});
    h = g.OH;
    w = g.OW;
    c = k;
  }
};
}  // namespace

std::vector<ConvLayer> resnet_conv_layers(const ResNetConfig& cfg, int64_t batch,
                                          int64_t img_size) {
  RZ_CHECK(batch >= 1, "batch must be at least 1, got ", batch);
  RZ_CHECK(img_size >= 32, "image size must be at least 32, got ", img_size);
  std::vector<ConvLayer> layers;
  ShapeWalker x{&layers, batch, img_size, img_size, cfg.in_chans};
  if (cfg.deep_stem) {
    x.conv("conv1.0", cfg.stem_width, 3, 2, 1);
    x.conv("conv1.3", cfg.stem_width, 3, 1, 1);
    x.conv("conv1.6", 2 * cfg.stem_width, 3, 1, 1);
  } else {
    x.conv("conv1", 64, 7, 2, 3);
  }
  x.h = (x.h + 2 - 3) / 2 + 1;  // maxpool 3x3 / 2, pad 1
  x.w = (x.w + 2 - 3) / 2 + 1;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = cfg.channels[static_cast<size_t>(s)];
    const int64_t out = planes * cfg.expansion();
    for (int64_t b = 0; b < cfg.layers[static_cast<size_t>(s)]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      ShapeWalker shortcut = x;
      if (cfg.bottleneck) {
        x.conv(p + "conv1", planes, 1, 1, 0);
        x.conv(p + "conv2", planes, 3, stride, 1);
        x.conv(p + "conv3", out, 1, 1, 0);
      } else {
        x.conv(p + "conv1", planes, 3, stride, 1);
        x.conv(p + "conv2", out, 3, 1, 1);
      }
      if (cfg.se) {
        const int64_t rd = se_reduced_channels(out);
        ShapeWalker pooled{&layers, batch, 1, 1, out};
        pooled.conv(p + "se.fc1", rd, 1, 1, 0, true);
        pooled.conv(p + "se.fc2", out, 1, 1, 0, true);
      }
      if (stride != 1 || shortcut.c != out) {
        if (cfg.avg_down) {
          if (stride != 1) {  // AvgPool2d(2, stride, ceil_mode)
            shortcut.h = (shortcut.h + 1) / 2;
            shortcut.w = (shortcut.w + 1) / 2;
          }
          shortcut.conv(p + "downsample.1", out, 1, 1, 0);
        } else {
          shortcut.conv(p + "downsample.0", out, 1, stride, 0);
        }
      }
    }
  }
  return layers;
}

bool same_conv_geom(const Conv2dGeom& a, const Conv2dGeom& b) {
  return a.N == b.N && a.H == b.H && a.W == b.W && a.C == b.C && a.K == b.K && a.R == b.R &&
         a.S == b.S && a.sh == b.sh && a.sw == b.sw && a.ph == b.ph && a.pw == b.pw &&
         a.OH == b.OH && a.OW == b.OW;
}

std::vector<Conv2dGeom> resnet_conv_shapes(const ResNetConfig& cfg, int64_t batch, int64_t img_size,
                                           bool unique) {
  std::vector<Conv2dGeom> shapes;
  for (const ConvLayer& l : resnet_conv_layers(cfg, batch, img_size)) {
    bool seen = false;
    if (unique)
      for (const Conv2dGeom& g : shapes) seen = seen || same_conv_geom(g, l.geom);
    if (!seen) shapes.push_back(l.geom);
  }
  return shapes;
}

}  // namespace rz
