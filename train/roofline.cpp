#include "train/roofline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <toml++/toml.h>
#include <utility>

#include "engine/error.h"
#include "train/trainer.h"

namespace rz {

namespace {

// bench/gpus/*.toml, embedded at configure time: {key, text} pairs.
struct BuiltinGpu {
  const char* key;
  const char* text;
};
constexpr BuiltinGpu kBuiltinGpus[] = {
#include "gpu_specs.inc"
};

double positive_field(const toml::table& t, const char* field, const std::string& origin) {
  const auto node = t[field];
  RZ_CHECK(node && (node.is_floating_point() || node.is_integer()), origin, ": '", field,
           "' is missing or not a number");
  const double v = node.value<double>().value_or(0.0);
  RZ_CHECK(std::isfinite(v) && v > 0, origin, ": ", field, " = ", v, " (expected a positive number)");
  return v;
}

std::string string_field(const toml::table& t, const char* field, const std::string& origin) {
  const auto v = t[field].value<std::string>();
  RZ_CHECK(v && !v->empty(), origin, ": '", field, "' is missing or empty");
  return *v;
}

}  // namespace

std::vector<std::string> builtin_gpus() {
  std::vector<std::string> keys;
  for (const auto& g : kBuiltinGpus) keys.emplace_back(g.key);
  return keys;
}

GpuPeaks parse_gpu_peaks(const std::string& toml_text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    RZ_THROW(origin, ":", e.source().begin.line, ": ", e.description());
  }
  GpuPeaks g;
  g.key = origin;
  g.name = string_field(t, "name", origin);
  g.bf16_dense_tflops = positive_field(t, "bf16_dense_tflops", origin);
  g.tf32_dense_tflops = positive_field(t, "tf32_dense_tflops", origin);
  g.fp32_tflops = positive_field(t, "fp32_tflops", origin);
  g.hbm_tbps = positive_field(t, "hbm_tbps", origin);
  g.memory_gib = positive_field(t, "memory_gib", origin);
  g.source = string_field(t, "source", origin);
  return g;
}

GpuPeaks gpu_peaks(const std::string& key_or_file) {
  for (const auto& b : kBuiltinGpus) {
    if (key_or_file == b.key) {
      GpuPeaks g = parse_gpu_peaks(b.text, std::string("bench/gpus/") + b.key + ".toml");
      g.key = b.key;
      return g;
    }
  }
  if (std::filesystem::is_regular_file(key_or_file)) {
    std::ifstream in(key_or_file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    RZ_CHECK(in.good() || in.eof(), "cannot read '", key_or_file, "'");
    return parse_gpu_peaks(text.str(), key_or_file);
  }
  std::string known;
  for (const auto& k : builtin_gpus()) known += (known.empty() ? "" : ", ") + k;
  RZ_THROW("--gpu '", key_or_file, "': not a built-in GPU (", known, ") and not a file");
}

RooflineOp conv_pass(const ConvShape& cs, const std::string& pass, bool bf16) {
  RZ_CHECK(pass == "fwd" || pass == "dgrad" || pass == "wgrad", "conv pass '", pass, "' (fwd, dgrad or wgrad)");
  RZ_CHECK(cs.n >= 1 && cs.c >= 1 && cs.k >= 1 && cs.r >= 1 && cs.stride >= 1 && cs.out_h() >= 1 && cs.out_w() >= 1,
           "conv shape N ", cs.n, " H ", cs.h, " W ", cs.w, " C ", cs.c, " K ", cs.k, " R ", cs.r, " stride ",
           cs.stride);
  const double a = bf16 ? 2.0 : 4.0;
  const double in = static_cast<double>(cs.n) * static_cast<double>(cs.h * cs.w * cs.c);
  const double out = static_cast<double>(cs.n) * static_cast<double>(cs.out_h() * cs.out_w() * cs.k);
  const double P = static_cast<double>(cs.k * cs.r * cs.r * cs.c);
  RooflineOp op;
  op.kind = "conv." + pass;
  op.phase = pass == "fwd" ? "forward" : "backward";
  op.flops = 2.0 * out * static_cast<double>(cs.r * cs.r * cs.c);
  // Each pass reads two of (x, w, dy) and writes the third: the same three tensors.
  op.bytes = a * (in + out + P);
  op.tensor_core = true;
  op.model_flops = op.flops;
  return op;
}

// ---- the step, op by op ----------------------------------------------------

namespace {

struct Act {
  int64_t n = 0, h = 0, w = 0, c = 0;
  double elems() const { return static_cast<double>(n) * static_cast<double>(h * w * c); }
  double per_image_channels() const { return static_cast<double>(n * c); }  // [N, C] vectors
};

// Emits the forward ops in order and each op's backward ops; the backward
// list is kept in forward order and reversed at the end, so an op pushes its
// backward ops last-first.
class StepWalker {
 public:
  explicit StepWalker(const RooflineOptions& o)
      : o_(o), a_(o.bf16 ? 2.0 : 4.0), w_(o.bf16 ? 2.0 : 4.0) {}

  std::vector<RooflineOp> finish() {
    std::vector<RooflineOp> ops = std::move(fwd_);
    ops.insert(ops.end(), bwd_.rbegin(), bwd_.rend());
    optimizer(ops);
    return ops;
  }

  // Convolution with a KRSC weight; `input_grad`: whether the input needs a
  // gradient (not for the image).
  Act conv(const std::string& layer, const Act& x, int64_t cout, int64_t k, int64_t stride,
           bool input_grad = true) {
    const ConvShape cs{x.n, x.h, x.w, x.c, cout, k, stride};
    const Act y{x.n, cs.out_h(), cs.out_w(), cout};
    const double P = static_cast<double>(cout * k * k * x.c);
    auto pass = [&](const char* name, const char* phase) {
      RooflineOp op = conv_pass(cs, name, o_.bf16);
      op.layer = layer;
      op.phase = phase;
      (std::string(phase) == "forward" ? fwd_ : bwd_).push_back(op);
    };
    weight_cast_fwd(layer, P);
    pass("fwd", "forward");
    // backward, last first: accumulate, cast back, weight gradient, data gradient
    accumulate(layer + ".weight", P);
    weight_cast_bwd(layer, P);
    pass("wgrad", "backward");
    if (input_grad) pass("dgrad", "backward");
    return y;
  }

  // Training batch norm (batch_norm2d), or batch_norm_act with the ReLU fused.
  void bn(const std::string& layer, const Act& x, bool fused_relu) {
    const double E = x.elems(), C = static_cast<double>(x.c);
    // gamma, beta read; running mean and variance read and written (fp32)
    const double params = 4.0 * (2 * C + 4 * C);
    buffers_ += 2 * C;  // running mean and variance (the EMA averages them too)
    accumulate(layer + ".weight", C);
    accumulate(layer + ".bias", C);
    if (fused_relu) {
      f(layer, "bn_act.fwd", 6 * E, 2 * a_ * E + params);
      b(layer, "bn_act.bwd", 11 * E, 4 * a_ * E + 4.0 * 4 * C);  // x, y (the ReLU mask), dy -> dx
    } else {
      f(layer, "bn.fwd", 5 * E, 2 * a_ * E + params);
      b(layer, "bn.bwd", 10 * E, 3 * a_ * E + 4.0 * 4 * C);  // x, dy -> dx; dgamma, dbeta
    }
  }

  void relu(const std::string& layer, const Act& x) {
    f(layer, "relu.fwd", x.elems(), 2 * a_ * x.elems());
    b(layer, "relu.bwd", x.elems(), 3 * a_ * x.elems());  // y, dy -> dx
  }

  void bn_relu(const std::string& layer, const Act& x, bool fused) {
    bn(layer, x, fused);
    if (!fused) relu(layer, x);
  }

  void residual_add(const std::string& layer, const Act& x) {
    f(layer, "add.fwd", x.elems(), 3 * a_ * x.elems());  // backward passes the gradient through
  }

  // Autograd sums the gradients of a tensor that feeds two ops (the block
  // input: conv1 and the shortcut; the SE input: the pool and the scale).
  // Pushed where the tensor is produced, so it runs after both consumers' backward.
  void grad_sum(const std::string& layer, const Act& x) {
    b(layer, "grad.add", x.elems(), 3 * a_ * x.elems());
  }

  Act maxpool(const std::string& layer, const Act& x) {
    Act y{x.n, (x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1, x.c};
    // int32 argmax per output, kept for backward
    f(layer, "maxpool.fwd", 9 * y.elems(), a_ * (x.elems() + y.elems()) + 4 * y.elems());
    b(layer, "maxpool.bwd", y.elems(), a_ * (y.elems() + x.elems()) + 4 * y.elems());
    return y;
  }

  Act avgpool2(const std::string& layer, const Act& x) {  // 2x2/2, ceil mode (avg_down)
    Act y{x.n, (x.h + 1) / 2, (x.w + 1) / 2, x.c};
    f(layer, "avgpool.fwd", 4 * y.elems(), a_ * (x.elems() + y.elems()));
    b(layer, "avgpool.bwd", x.elems(), a_ * (y.elems() + x.elems()));
    return y;
  }

  void global_pool(const std::string& layer, const Act& x) {
    f(layer, "gap.fwd", x.elems(), a_ * (x.elems() + x.per_image_channels()));
    b(layer, "gap.bwd", x.elems(), a_ * (x.elems() + x.per_image_channels()));
  }

  // linear on [n, cin] with an fp32 bias (the SE's 1x1 convs, the head).
  void linear(const std::string& layer, int64_t n, int64_t cin, int64_t cout) {
    const double P = static_cast<double>(cin * cout), N = static_cast<double>(n);
    const double flops = 2 * N * P;
    const double io = a_ * N * static_cast<double>(cin + cout);
    weight_cast_fwd(layer, P);
    // The bias add rides in the GEMM's epilogue: its FLOPs are not counted (as
    // PyTorch's flop counter does not).
    f(layer, "linear.fwd", flops, io + w_ * P + 4.0 * static_cast<double>(cout), true);
    accumulate(layer + ".bias", static_cast<double>(cout));
    accumulate(layer + ".weight", P);
    weight_cast_bwd(layer, P);
    b(layer, "linear.wgrad", flops, io + w_ * P + 4.0 * static_cast<double>(cout), true);
    b(layer, "linear.dgrad", flops, io + w_ * P, true);
  }

  void small_activation(const std::string& layer, const char* name, double elems, double flops_per) {
    f(layer, std::string(name) + ".fwd", flops_per * elems, 2 * a_ * elems);
    b(layer, std::string(name) + ".bwd", 2 * elems, 3 * a_ * elems);
  }

  void channel_scale(const std::string& layer, const Act& x) {
    const double E = x.elems(), NC = x.per_image_channels();
    f(layer, "channel_scale.fwd", E, a_ * (2 * E + NC));
    b(layer, "channel_scale.bwd", 3 * E, a_ * (3 * E + 2 * NC));  // dy, x, s -> dx, ds
  }

  // The unfused SE: pool, fc1, ReLU, fc2, sigmoid, scale.
  void squeeze_excite(const std::string& layer, const Act& x) {
    const int64_t rd = se_reduced_channels(x.c);
    grad_sum(layer, x);  // x feeds the pool and the scale
    global_pool(layer + ".pool", x);
    linear(layer + ".fc1", x.n, x.c, rd);
    small_activation(layer + ".fc1", "relu", static_cast<double>(x.n * rd), 1);
    linear(layer + ".fc2", x.n, rd, x.c);
    small_activation(layer + ".fc2", "sigmoid", x.per_image_channels(), 4);
    channel_scale(layer, x);
  }

  // se_block_tail: bn3, squeeze, excitation, scale, residual add and ReLU in one op.
  void se_tail(const std::string& layer, const Act& t, const std::string& bn3, const std::string& se) {
    const double E = t.elems(), C = static_cast<double>(t.c);
    const int64_t rd = se_reduced_channels(t.c);
    const double fc_params = static_cast<double>(2 * rd * t.c + rd + t.c);
    const double fc_flops = 4.0 * static_cast<double>(t.n * rd * t.c);
    buffers_ += 2 * C;
    accumulate(bn3 + ".weight", C);
    accumulate(bn3 + ".bias", C);
    accumulate(se + ".fc1.weight", static_cast<double>(rd * t.c));
    accumulate(se + ".fc1.bias", static_cast<double>(rd));
    accumulate(se + ".fc2.weight", static_cast<double>(rd * t.c));
    accumulate(se + ".fc2.bias", C);
    // reads t and the shortcut, writes the block output; fp32 BN and SE parameters
    f(layer, "se_tail.fwd", 9 * E + fc_flops, 3 * a_ * E + 4.0 * (6 * C + fc_params), false, fc_flops);
    // reads dout, t and out (saved), writes dt and dshortcut, fp32 parameter gradients
    b(layer, "se_tail.bwd", 16 * E + 2 * fc_flops, 5 * a_ * E + 4.0 * (2 * C + 2 * fc_params), false,
      2 * fc_flops);
  }

  void input_cast(const Act& x) {
    if (o_.bf16) f("input", "cast.input", 0, (4.0 + 2.0) * x.elems());
  }

  void loss(int64_t n, int64_t classes) {
    const double E = static_cast<double>(n * classes);
    f("loss", "loss.fwd", 6 * E, a_ * E + 4 * E);           // logits, fp32 targets
    b("loss", "loss.bwd", 4 * E, a_ * E + 4 * E + a_ * E);  // logits, targets -> dlogits
  }

 private:
  void f(const std::string& layer, const std::string& kind, double flops, double bytes, bool tensor = false,
         double products = 0) {
    fwd_.push_back({layer, kind, "forward", flops, bytes, tensor, tensor ? flops : products});
  }
  void b(const std::string& layer, const std::string& kind, double flops, double bytes, bool tensor = false,
         double products = 0) {
    bwd_.push_back({layer, kind, "backward", flops, bytes, tensor, tensor ? flops : products});
  }
  // bf16: conv and linear round their fp32 weight to bf16 (cast) and the
  // cast's backward turns the bf16 weight gradient back into fp32.
  void weight_cast_fwd(const std::string& layer, double P) {
    if (o_.bf16) f(layer, "cast.weight.fwd", 0, (4.0 + 2.0) * P);
  }
  void weight_cast_bwd(const std::string& layer, double P) {
    if (o_.bf16) b(layer, "cast.weight.bwd", 0, (2.0 + 4.0) * P);
  }
  // AccumulateGrad: the first gradient of a step is copied into .grad (fp32).
  void accumulate(const std::string& param, double P) {
    params_ += P;
    b(param, "grad.accumulate", 0, 8.0 * P);
  }

  void optimizer(std::vector<RooflineOp>& ops) const {
    const double P = params_;
    if (o_.clip_grad) {
      ops.push_back({"optimizer", "clip.norm", "optimizer", 2 * P, 4 * P, false, 0});
      ops.push_back({"optimizer", "clip.scale", "optimizer", P, 8 * P, false, 0});
    }
    if (o_.optimizer == "sgd")  // read p, g, momentum; write p, momentum
      ops.push_back({"optimizer", "optim.sgd", "optimizer", 6 * P, 20 * P, false, 0});
    else  // read p, g, m, v; write p, m, v
      ops.push_back({"optimizer", "optim." + o_.optimizer, "optimizer", 15 * P, 28 * P, false, 0});
    if (o_.ema) {  // every float of the state dict: read ema and model, write ema
      const double S = P + buffers_;
      ops.push_back({"optimizer", "ema", "optimizer", 3 * S, 12 * S, false, 0});
    }
  }

  const RooflineOptions& o_;
  const double a_;  // bytes per stored activation element
  const double w_;  // bytes per weight element as the product reads it
  std::vector<RooflineOp> fwd_, bwd_;
  double params_ = 0, buffers_ = 0;
};

}  // namespace

std::vector<RooflineOp> training_step_ops(const RooflineOptions& opt) {
  const ResNetConfig& m = opt.model;
  RZ_CHECK(opt.image_size >= 32, "roofline: image size ", opt.image_size, " (at least 32)");
  RZ_CHECK(opt.batch >= 1, "roofline: batch ", opt.batch);
  RZ_CHECK(opt.optimizer == "adamw" || opt.optimizer == "adam" || opt.optimizer == "sgd",
           "roofline: optimizer '", opt.optimizer, "' (adamw, adam or sgd)");
  StepWalker s(opt);
  Act x{opt.batch, opt.image_size, opt.image_size, m.in_chans};
  s.input_cast(x);
  // The stem: plain Conv2d/BatchNorm2d/ReLU modules (never fused).
  auto stem_bn = [&](const std::string& name, const Act& a) {
    s.bn(name, a, false);
    s.relu(name, a);
  };
  if (m.deep_stem) {
    x = s.conv("conv1.0", x, m.stem_width, 3, 2, /*input_grad=*/false);
    stem_bn("conv1.1", x);
    x = s.conv("conv1.3", x, m.stem_width, 3, 1);
    stem_bn("conv1.4", x);
    x = s.conv("conv1.6", x, 2 * m.stem_width, 3, 1);
  } else {
    x = s.conv("conv1", x, 64, 7, 2, /*input_grad=*/false);
  }
  stem_bn("bn1", x);
  x = s.maxpool("maxpool", x);

  const bool fused_bn = m.fused_bn || m.fused_conv_bn;
  for (int st = 0; st < 4; ++st) {
    const int64_t planes = m.channels[static_cast<size_t>(st)];
    const int64_t out = planes * m.expansion();
    for (int64_t blk = 0; blk < m.layers[static_cast<size_t>(st)]; ++blk) {
      const std::string name = "layer" + std::to_string(st + 1) + "." + std::to_string(blk);
      const int64_t stride = (st > 0 && blk == 0) ? 2 : 1;
      const Act in = x;
      s.grad_sum(name, in);  // conv1 and the shortcut both read the block input
      Act h;
      if (m.bottleneck) {
        h = s.conv(name + ".conv1", in, planes, 1, 1);
        s.bn_relu(name + ".bn1", h, fused_bn);
        h = s.conv(name + ".conv2", h, planes, 3, stride);
        s.bn_relu(name + ".bn2", h, fused_bn);
        h = s.conv(name + ".conv3", h, out, 1, 1);
      } else {
        h = s.conv(name + ".conv1", in, planes, 3, stride);
        s.bn_relu(name + ".bn1", h, fused_bn);
        h = s.conv(name + ".conv2", h, out, 3, 1);
      }
      const bool fused_se = m.fused_se && m.bottleneck && m.se;
      const std::string last_bn = name + (m.bottleneck ? ".bn3" : ".bn2");
      if (!fused_se) {
        s.bn(last_bn, h, false);
        if (m.se) s.squeeze_excite(name + ".se", h);
      }
      // The shortcut runs after the main branch (ResNetBlock::forward).
      if (stride != 1 || in.c != out) {
        Act sc = in;
        if (m.avg_down && stride != 1) {
          sc = s.avgpool2(name + ".downsample.0", sc);
          sc = s.conv(name + ".downsample.1", sc, out, 1, 1);
          s.bn(name + ".downsample.2", sc, false);
        } else {
          sc = s.conv(name + ".downsample.0", sc, out, 1, m.avg_down ? 1 : stride);
          s.bn(name + ".downsample.1", sc, false);
        }
      }
      if (fused_se) {
        s.se_tail(name + ".se_tail", h, last_bn, name + ".se");
      } else {
        s.residual_add(name, h);
        s.relu(name, h);
      }
      x = h;
    }
  }
  s.global_pool("global_pool", x);
  if (m.drop_rate > 0) s.small_activation("head", "dropout", x.per_image_channels(), 1);
  s.linear("fc", x.n, x.c, m.num_classes);
  s.loss(x.n, m.num_classes);
  return s.finish();
}

RooflineOptions roofline_options(const TrainConfig& cfg) {
  RooflineOptions o;
  o.model = model_config(cfg);
  o.image_size = cfg.model.img_size;
  o.batch = cfg.train.batch;
  o.bf16 = cfg.run.precision == "bf16";
  o.allow_tf32 = cfg.run.allow_tf32;
  o.optimizer = cfg.optim.name;
  o.ema = cfg.train.ema_decay > 0;
  o.clip_grad = cfg.train.clip_grad > 0;
  return o;
}

// ---- bounds ------------------------------------------------------------------

double peak_flops(const RooflineOp& op, const GpuPeaks& gpu, bool bf16, bool allow_tf32) {
  if (!op.tensor_core) return gpu.fp32_tflops * 1e12;
  if (bf16) return gpu.bf16_dense_tflops * 1e12;
  return (allow_tf32 ? gpu.tf32_dense_tflops : gpu.fp32_tflops) * 1e12;
}

double bound_time(const RooflineOp& op, const GpuPeaks& gpu, bool bf16, bool allow_tf32) {
  return std::max(op.flops / peak_flops(op, gpu, bf16, allow_tf32), op.bytes / (gpu.hbm_tbps * 1e12));
}

double Roofline::peak_flops(const RooflineOp& op) const {
  return rz::peak_flops(op, gpu, options.bf16, options.allow_tf32);
}
double Roofline::compute_time(const RooflineOp& op) const { return op.flops / peak_flops(op); }
double Roofline::memory_time(const RooflineOp& op) const { return op.bytes / (gpu.hbm_tbps * 1e12); }
double Roofline::bound_time(const RooflineOp& op) const {
  return rz::bound_time(op, gpu, options.bf16, options.allow_tf32);
}
bool Roofline::memory_bound(const RooflineOp& op) const { return memory_time(op) >= compute_time(op); }

Roofline roofline(const RooflineOptions& opt, const GpuPeaks& gpu) {
  Roofline r;
  r.options = opt;
  r.gpu = gpu;
  r.ops = training_step_ops(opt);
  RooflineTotals& t = r.totals;
  for (const auto& op : r.ops) {
    t.flops += op.flops;
    t.bytes += op.bytes;
    t.model_flops += op.model_flops;
    const double b = r.bound_time(op);
    t.bound_s += b;
    if (r.memory_bound(op)) t.memory_bound_s += b;
  }
  t.images_per_s = static_cast<double>(opt.batch) / t.bound_s;
  RooflineOp product;
  product.tensor_core = true;
  t.mfu_ceiling = t.model_flops / (t.bound_s * r.peak_flops(product));
  return r;
}

// ---- output ------------------------------------------------------------------

namespace {
struct KindSum {
  int64_t count = 0;
  double flops = 0, bytes = 0, bound_s = 0, memory_bound_s = 0;
};
}  // namespace

std::string roofline_table(const Roofline& r, bool per_op) {
  const RooflineOptions& o = r.options;
  std::string out;
  char line[320];
  std::snprintf(line, sizeof line,
                "%s at %lld px, batch %lld, %s, %s%s%s%s; %s (%s): %.1f TFLOP/s %s, %.1f TFLOP/s fp32, %.2f TB/s\n",
                o.model.name.c_str(), static_cast<long long>(o.image_size), static_cast<long long>(o.batch),
                o.bf16 ? "bf16 mixed precision" : (o.allow_tf32 ? "fp32 (TF32 tensor cores)" : "fp32"),
                o.optimizer.c_str(), o.ema ? " + EMA" : "", o.clip_grad ? " + clipping" : "",
                (o.model.fused_se || o.model.fused_bn || o.model.fused_conv_bn) ? ", fused ops" : "",
                r.gpu.key.c_str(), r.gpu.name.c_str(),
                o.bf16 ? r.gpu.bf16_dense_tflops : (o.allow_tf32 ? r.gpu.tf32_dense_tflops : r.gpu.fp32_tflops),
                o.bf16 ? "bf16" : (o.allow_tf32 ? "tf32" : "fp32"), r.gpu.fp32_tflops, r.gpu.hbm_tbps);
  out += line;
  if (per_op) {
    std::snprintf(line, sizeof line, "%-28s %-18s %-9s %12s %12s %9s %-7s %10s\n", "layer", "kind", "phase",
                  "MFLOP", "MB", "FLOP/B", "bound", "min us");
    out += line;
    for (const auto& op : r.ops) {
      std::snprintf(line, sizeof line, "%-28s %-18s %-9s %12.3f %12.3f %9.1f %-7s %10.3f\n", op.layer.c_str(),
                    op.kind.c_str(), op.phase.c_str(), op.flops / 1e6, op.bytes / 1e6,
                    op.bytes > 0 ? op.flops / op.bytes : 0.0, r.memory_bound(op) ? "memory" : "compute",
                    r.bound_time(op) * 1e6);
      out += line;
    }
    out += "\n";
  }
  std::map<std::string, KindSum> kinds;
  std::vector<std::string> order;
  for (const auto& op : r.ops) {
    auto [it, added] = kinds.try_emplace(op.kind);
    if (added) order.push_back(op.kind);
    KindSum& k = it->second;
    ++k.count;
    k.flops += op.flops;
    k.bytes += op.bytes;
    const double b = r.bound_time(op);
    k.bound_s += b;
    if (r.memory_bound(op)) k.memory_bound_s += b;
  }
  std::snprintf(line, sizeof line, "%-18s %6s %11s %10s %8s %8s %10s %7s\n", "kind", "ops", "GFLOP", "GB",
                "FLOP/B", "memory", "min ms", "share");
  out += line;
  const RooflineTotals& t = r.totals;
  for (const auto& kind : order) {
    const KindSum& k = kinds.at(kind);
    std::snprintf(line, sizeof line, "%-18s %6lld %11.2f %10.3f %8.1f %7.0f%% %10.3f %6.1f%%\n", kind.c_str(),
                  static_cast<long long>(k.count), k.flops / 1e9, k.bytes / 1e9,
                  k.bytes > 0 ? k.flops / k.bytes : 0.0, k.bound_s > 0 ? 100 * k.memory_bound_s / k.bound_s : 0.0,
                  k.bound_s * 1e3, 100 * k.bound_s / t.bound_s);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-18s %6lld %11.2f %10.3f %8.1f %7.0f%% %10.3f %6.1f%%\n", "total",
                static_cast<long long>(r.ops.size()), t.flops / 1e9, t.bytes / 1e9, t.flops / t.bytes,
                100 * t.memory_bound_s / t.bound_s, t.bound_s * 1e3, 100.0);
  out += line;
  std::snprintf(line, sizeof line,
                "step lower bound %.2f ms (%.1f%% of it in memory-bound ops); at most %.0f images/s; "
                "MFU ceiling %.1f%% (%.1f GFLOP of convolutions and linear layers per step)\n",
                t.bound_s * 1e3, 100 * t.memory_bound_s / t.bound_s, t.images_per_s, 100 * t.mfu_ceiling,
                t.model_flops / 1e9);
  out += line;
  out += "peaks: " + r.gpu.source + "\n";
  return out;
}

nlohmann::json roofline_json(const Roofline& r) {
  const RooflineOptions& o = r.options;
  nlohmann::json j;
  j["model"] = o.model.name;
  j["image_size"] = o.image_size;
  j["batch"] = o.batch;
  j["in_chans"] = o.model.in_chans;
  j["num_classes"] = o.model.num_classes;
  j["precision"] = o.bf16 ? "bf16" : (o.allow_tf32 ? "tf32" : "fp32");
  j["optimizer"] = o.optimizer;
  j["ema"] = o.ema;
  j["clip_grad"] = o.clip_grad;
  j["fused_se"] = o.model.fused_se;
  j["fused_bn"] = o.model.fused_bn;
  j["fused_conv_bn"] = o.model.fused_conv_bn;
  j["gpu"] = {{"key", r.gpu.key},
              {"name", r.gpu.name},
              {"bf16_dense_tflops", r.gpu.bf16_dense_tflops},
              {"tf32_dense_tflops", r.gpu.tf32_dense_tflops},
              {"fp32_tflops", r.gpu.fp32_tflops},
              {"hbm_tbps", r.gpu.hbm_tbps},
              {"source", r.gpu.source}};
  const RooflineTotals& t = r.totals;
  j["totals"] = {{"flops", t.flops},
                 {"bytes", t.bytes},
                 {"model_flops", t.model_flops},
                 {"bound_s", t.bound_s},
                 {"memory_bound_s", t.memory_bound_s},
                 {"memory_bound_share", t.memory_bound_s / t.bound_s},
                 {"images_per_s", t.images_per_s},
                 {"mfu_ceiling", t.mfu_ceiling}};
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& op : r.ops) {
    ops.push_back({{"layer", op.layer},
                   {"kind", op.kind},
                   {"phase", op.phase},
                   {"flops", op.flops},
                   {"bytes", op.bytes},
                   {"intensity", op.bytes > 0 ? op.flops / op.bytes : 0.0},
                   {"tensor_core", op.tensor_core},
                   {"model_flops", op.model_flops},
                   {"bound", r.memory_bound(op) ? "memory" : "compute"},
                   {"bound_s", r.bound_time(op)}});
  }
  j["ops"] = std::move(ops);
  return j;
}

}  // namespace rz
