// `ranzcr bench`: the per-layer convolution table of a model on this GPU:
// cuDNN (its measured best algorithm) against every native kernel variant,
// forward, data gradient and weight gradient, for each distinct conv shape.
// With --fused also the forward with the BN after it (ConvFusion): cuDNN +
// our BN passes against the native epilogue + what is left of the BN, in
// training (fwd+bnstats) and eval (fwd+bneval).
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "engine/conv_autotune.h"
#include "engine/cuda_context.h"
#include "engine/device.h"
#include "models/conv_shapes.h"
#include "train/cli/commands.h"

namespace rz::cli {

void add_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Per-layer convolution timings: cuDNN vs native kernels (GPU)");
  auto model = std::make_shared<std::string>("seresnet152d");
  auto batch = std::make_shared<int64_t>(32);
  auto img = std::make_shared<int64_t>(512);
  auto dtype = std::make_shared<std::string>("bf16");
  auto device = std::make_shared<int>(0);
  auto fused = std::make_shared<bool>(false);
  cmd->add_option("--model", *model, "model whose convolutions are timed");
  cmd->add_option("--batch", *batch, "batch size")->check(CLI::PositiveNumber);
  cmd->add_option("--img-size", *img, "input size")->check(CLI::Range(32, 4096));
  cmd->add_option("--dtype", *dtype, "bf16 or fp32")->check(CLI::IsMember({"bf16", "fp32"}));
  cmd->add_option("--device", *device, "CUDA device index");
  cmd->add_flag("--fused", *fused, "also time conv + BN with the BN work in the native epilogue");
  cmd->callback([=] {
    if (cuda_device_count() == 0) {
      std::printf("ranzcr bench: no CUDA device (or a build without CUDA); nothing to time\n");
      return;
    }
    ResNetConfig cfg = resnet_config(*model);
    cfg.num_classes = 11;
    CudaContext& ctx = engine_cuda_context(*device);
    const DType dt = *dtype == "bf16" ? DType::BF16 : DType::F32;
    // Names of the layers sharing each distinct geometry (SE excitations are
    // GEMMs on a 1x1 map, computed as linear layers: skipped here).
    std::vector<Conv2dGeom> shapes;
    std::vector<std::string> names;
    std::vector<int> counts;
    for (const ConvLayer& l : resnet_conv_layers(cfg, *batch, *img)) {
      if (l.se) continue;
      size_t i = 0;
      while (i < shapes.size() && !same_conv_geom(shapes[i], l.geom)) ++i;
      if (i == shapes.size()) {
        shapes.push_back(l.geom);
        names.push_back(l.name);
        counts.push_back(0);
      }
      ++counts[i];
    }
    std::printf("%s, %s, batch %lld, %lldx%lld, %s; times in ms (median of 5), x = cuDNN / native\n",
                ctx.props().str().c_str(), model->c_str(), static_cast<long long>(*batch),
                static_cast<long long>(*img), static_cast<long long>(*img), dtype->c_str());
    std::printf("%-24s %5s %-34s %-12s %9s", "first layer", "uses", "N H W C -> K RxS s p", "pass", "cudnn");
    for (int v : native_conv_variants()) std::printf(" %9s %6s", native_variant_name(v).c_str(), "x");
    std::printf("  pick\n");
    struct Kind {
      ConvPass pass;
      ConvFusion fusion;
    };
    std::vector<Kind> kinds{{ConvPass::Fwd, ConvFusion::None},
                            {ConvPass::Dgrad, ConvFusion::None},
                            {ConvPass::Wgrad, ConvFusion::None}};
    if (*fused) {
      kinds.push_back({ConvPass::Fwd, ConvFusion::BnStats});
      kinds.push_back({ConvPass::Fwd, ConvFusion::BnEval});
    }
    auto kind_name = [](const Kind& k) {
      return std::string(conv_pass_name(k.pass)) + conv_fusion_name(k.fusion);
    };
    std::map<std::pair<int, int>, std::pair<double, int>> log_ratio;  // (kind, variant) -> (sum log, n)
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Conv2dGeom& g = shapes[i];
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lld %lld %lld %lld -> %lld %lldx%lld s%lld p%lld",
                    static_cast<long long>(g.N), static_cast<long long>(g.H), static_cast<long long>(g.W),
                    static_cast<long long>(g.C), static_cast<long long>(g.K), static_cast<long long>(g.R),
                    static_cast<long long>(g.S), static_cast<long long>(g.sh), static_cast<long long>(g.ph));
      for (size_t ki = 0; ki < kinds.size(); ++ki) {
        const Kind& kind = kinds[ki];
        const ConvTimingRow r = conv_time_all(ctx, g, dt, kind.pass, kind.fusion);
        std::printf("%-24s %5d %-34s %-12s %9.3f", names[i].c_str(), counts[i], shape,
                    kind_name(kind).c_str(), r.cudnn_ms);
        for (size_t v = 0; v < r.native_ms.size(); ++v) {
          if (r.native_ms[v] < 0) {
            std::printf(" %9s %6s", "-", "-");
            continue;
          }
          const double x = r.cudnn_ms / r.native_ms[v];
          std::printf(" %9.3f %6.2f", r.native_ms[v], x);
          auto& acc = log_ratio[{static_cast<int>(ki), static_cast<int>(v) + 1}];
          acc.first += std::log(x) * counts[i];  // weighted by how often the layer runs
          acc.second += counts[i];
        }
        std::printf("  %s\n", r.pick == 0 ? "cudnn" : native_variant_name(r.pick).c_str());
      }
    }
    std::printf("\ngeomean speed-up over cuDNN (weighted by layer count; >1: native faster):\n");
    for (const auto& [k, acc] : log_ratio) {
      const Kind& kind = kinds[static_cast<size_t>(k.first)];
      std::printf("  %-12s %s: %.3fx over %d layers%s\n", kind_name(kind).c_str(),
                  native_variant_name(k.second).c_str(), std::exp(acc.first / acc.second), acc.second,
                  conv_variant_validated(k.second, kind.pass) ? "" : " (not yet validated)");
    }
  });
}

}  // namespace rz::cli
