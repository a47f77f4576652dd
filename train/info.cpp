#include "train/info.h"

#include <cstdio>

#include "models/seresnet.h"

namespace rz {

namespace {
std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}
}  // namespace

std::string model_info_report(const InfoOptions& opt) {
  ResNetConfig cfg = resnet_config(opt.model);
  cfg.num_classes = opt.num_classes;
  cfg.in_chans = opt.in_chans;
  RZ_CHECK(opt.batch >= 1 && (opt.activation_bytes == 2 || opt.activation_bytes == 4),
           "info: batch ", opt.batch, ", activation bytes ", opt.activation_bytes);
  const auto stages = resnet_cost(cfg, opt.image_size);
  std::string out;
  char line[200];
  std::snprintf(line, sizeof line, "%s  %lldx%lld, %lld input channel(s), %lld classes\n",
                cfg.name.c_str(), static_cast<long long>(opt.image_size),
                static_cast<long long>(opt.image_size), static_cast<long long>(cfg.in_chans),
                static_cast<long long>(cfg.num_classes));
  out += line;
  std::snprintf(line, sizeof line, "%-8s %14s %10s %18s %14s\n", "stage", "params", "GMAC/img",
                "output (HxWxC)", "saved act/img");
  out += line;
  int64_t params = 0;
  double macs = 0, acts = 0;
  for (const auto& s : stages) {
    char shape[48];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", static_cast<long long>(s.out_h),
                  static_cast<long long>(s.out_w), static_cast<long long>(s.out_c));
    std::snprintf(line, sizeof line, "%-8s %14s %10.3f %18s %12.2f M\n", s.name.c_str(),
                  with_commas(s.params).c_str(), s.macs / 1e9, shape, s.activations / 1e6);
    out += line;
    params += s.params;
    macs += s.macs;
    acts += s.activations;
  }
  std::snprintf(line, sizeof line, "total    %14s %10.3f\n", with_commas(params).c_str(), macs / 1e9);
  out += line;
  std::snprintf(line, sizeof line, "parameters: %s (%.1f MB in fp32)\n", with_commas(params).c_str(),
                static_cast<double>(params) * 4 / 1e6);
  out += line;
  std::snprintf(line, sizeof line,
                "forward: %.2f GMAC per image; training step (fwd + bwd ~ 3x): %.1f GFLOP per image\n",
                macs / 1e9, 3 * 2 * macs / 1e9);
  out += line;
  std::snprintf(line, sizeof line,
                "activations saved for backward (estimate): %.2f GB for a batch of %lld at %lld "
                "bytes/element\n",
                acts * static_cast<double>(opt.batch * opt.activation_bytes) / 1e9,
                static_cast<long long>(opt.batch), static_cast<long long>(opt.activation_bytes));
  out += line;
  return out;
}

}  // namespace rz
