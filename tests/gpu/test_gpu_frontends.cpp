// The differentiable op front-ends (engine/ops.h), optimizers and a whole
// model on CUDA against the same calls on the CPU: forward values and the
// gradients of every input, in fp32 and in bf16 mixed precision.
//
// Each case builds f32 leaves on the CPU, runs the op, and backpropagates
// sum(out * r) for a random r. The CUDA run copies the leaves to the GPU; in
// bf16 mode the activation inputs go through cast(leaf, bf16) (so their
// gradients come back to the f32 leaves) while parameters stay f32, exactly
// as the trainer runs; the CPU reference then takes the same bf16-rounded
// activation inputs (in f32), so the comparison measures the kernels and not
// the rounding of the inputs (which can flip a max-pool argmax or dominate a
// mean that nearly cancels). Tolerances:
//   fp32: max |gpu - cpu| <= 1e-4 * max |cpu| per output and gradient
//         (cuDNN and cuBLAS run without TF32 by default);
//   bf16: normalized MSE sum (gpu - cpu)^2 / sum cpu^2 <= 2e-3 (bf16 keeps
//         8 significant bits, about 4e-3 relative per rounding).
#include "tests/gpu/gpu_test.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda_context.h"
#include "engine/cuda_graph.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "models/seresnet.h"

using namespace rz;

namespace {

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu()).to(DType::F32).to_vector<float>(); }

struct Compare {
  double max_err = 0, max_ref = 0, sq_err = 0, sq_ref = 0;
  void add(const std::vector<float>& got, const std::vector<float>& ref) {
    REQUIRE(got.size() == ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = static_cast<double>(got[i]) - ref[i];
      max_err = std::max(max_err, std::fabs(d));
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
      sq_err += d * d;
      sq_ref += static_cast<double>(ref[i]) * ref[i];
    }
  }
  double rel_max() const { return max_ref > 0 ? max_err / max_ref : max_err; }
  double nmse() const { return sq_ref > 0 ? sq_err / sq_ref : sq_err; }
};

void expect_match(const std::vector<float>& got, const std::vector<float>& ref, bool bf16,
                  const std::string& what) {
  Compare c;
  c.add(got, ref);
  INFO(what, ": max rel error ", c.rel_max(), ", nmse ", c.nmse());
  for (float g : got) REQUIRE(std::isfinite(g));
  if (bf16)
    CHECK(c.nmse() <= 2e-3);
  else
    CHECK(c.rel_max() <= 1e-4);
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs `fn` on CPU leaves and on their CUDA copies; compares the output and
// every leaf's gradient. params[i]: input i is a parameter (stays f32 in bf16 mode).
void check_op(const std::string& name, const std::vector<Tensor>& cpu_inputs,
              const std::vector<bool>& params, const OpFn& fn, bool bf16, uint64_t seed = 7) {
  CAPTURE(name);
  CAPTURE(bf16);
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> cpu_leaves, gpu_leaves, gpu_args;
  for (size_t i = 0; i < cpu_inputs.size(); ++i) {
    const bool activation = bf16 && is_floating(cpu_inputs[i].dtype()) && !params[i];
    const Tensor input =
        activation ? cpu_inputs[i].to(DType::BF16).to(cpu_inputs[i].dtype()) : cpu_inputs[i];
    Tensor c = input.clone();
    Tensor g = input.to(gpu);
    const bool grad = is_floating(c.dtype());
    if (grad) {
      c.set_requires_grad(true);
      g.set_requires_grad(true);
    }
    cpu_leaves.push_back(c);
    gpu_leaves.push_back(g);
    gpu_args.push_back(bf16 && grad && !params[i] ? cast(g, DType::BF16) : g);
  }
  const Tensor out_cpu = fn(cpu_leaves);
  const Tensor out_gpu = fn(gpu_args);
  REQUIRE(out_gpu.device() == gpu);
  REQUIRE(out_gpu.shape() == out_cpu.shape());
  expect_match(host(out_gpu), host(out_cpu), bf16, name + " forward");

  Generator gen(seed);
  const Tensor r = Tensor::uniform(out_cpu.shape(), -1, 1, gen);
  sum(mul(out_cpu, r)).backward();
  sum(mul(out_gpu, r.to(gpu).to(out_gpu.dtype()))).backward();
  for (size_t i = 0; i < cpu_leaves.size(); ++i) {
    if (!cpu_leaves[i].grad().defined()) continue;
    REQUIRE(gpu_leaves[i].grad().defined());
    CHECK(gpu_leaves[i].grad().dtype() == DType::F32);
    expect_match(host(gpu_leaves[i].grad()), host(cpu_leaves[i].grad()), bf16,
                 name + " grad of input " + std::to_string(i));
  }
}

Tensor rnd(const Shape& s, Generator& gen, double lo = -1, double hi = 1) {
  return Tensor::uniform(s, lo, hi, gen);
}

// One forward, BCE-with-logits and backward of a model on its device; x goes
// there as bf16 when asked. Returns the loss.
double model_step(Module& m, const Tensor& x, const Tensor& y, bool bf16) {
  const Device d = m.parameters().front().device();
  const Tensor xd = x.to(d).to(bf16 && d.is_cuda() ? DType::BF16 : DType::F32);
  Tensor loss = bce_with_logits(m.forward(xd), y.to(d));
  loss.backward();
  return loss.item();
}

// Every parameter gradient of `got` against the same parameter of `ref`.
Compare grads_against(const Module& got, const Module& ref) {
  Compare c;
  const auto pg = got.named_parameters(), pr = ref.named_parameters();
  REQUIRE(pg.size() == pr.size());
  for (size_t i = 0; i < pr.size(); ++i) {
    REQUIRE(pg[i].second.grad().defined());
    c.add(host(pg[i].second.grad()), host(pr[i].second.grad()));
  }
  return c;
}

// The bf16 yardstick for a whole model: how far the f32 CPU gradients move
// when the input moves by one bf16 rounding (relative noise of 2^-8), times
// the number of convolutions, each of which bf16 execution feeds a rounded
// tensor. A bf16 run further from f32 than that has an error of its own.
double bf16_gradient_noise(const ResNetConfig& cfg, uint64_t seed, const Tensor& x, const Tensor& y) {
  auto a = create_resnet(cfg, seed), b = create_resnet(cfg, seed);
  Generator gen(99);
  const Tensor noise = Tensor::uniform(x.shape(), -1.0 / 256, 1.0 / 256, gen);
  model_step(*a, x, y, false);
  model_step(*b, add(x, mul(x, noise)), y, false);
  int convs = 0;
  for (const auto& [name, p] : a->named_parameters()) convs += p.shape().size() == 4 ? 1 : 0;
  return grads_against(*b, *a).nmse() * convs;
}

}  // namespace

TEST_SUITE("gpu") {

TEST_CASE("gpu front-ends: elementwise, activations, reductions, permute, cast") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(1);
  for (bool bf16 : {false, true}) {
    const Shape s{3, 5, 7, 67};
    const Tensor a = rnd(s, gen), b = rnd(s, gen);
    check_op("add", {a, b}, {false, false}, [](auto& v) { return add(v[0], v[1]); }, bf16);
    check_op("sub", {a, b}, {false, false}, [](auto& v) { return sub(v[0], v[1]); }, bf16);
    check_op("mul", {a, b}, {false, false}, [](auto& v) { return mul(v[0], v[1]); }, bf16);
    check_op("scale", {a}, {false}, [](auto& v) { return scale(v[0], 0.37); }, bf16);
    check_op("relu", {a}, {false}, [](auto& v) { return relu(v[0]); }, bf16);
    check_op("sigmoid", {a}, {false}, [](auto& v) { return sigmoid(v[0]); }, bf16);
    check_op("mean", {a}, {false}, [](auto& v) { return mean(v[0]); }, bf16);
    check_op("permute", {a}, {false}, [](auto& v) { return permute(v[0], {0, 3, 1, 2}); }, bf16);
    check_op("reshape", {a}, {false}, [](auto& v) { return reshape(v[0], {3, -1}); }, bf16);
  }
}

TEST_CASE("gpu front-ends: conv2d through cuDNN") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(2);
  struct Case { int64_t n, h, w, c, k, r, stride, pad; };
  for (const Case& k : {Case{2, 9, 7, 8, 16, 3, 1, 1}, Case{2, 16, 16, 32, 24, 3, 2, 1},
                        Case{1, 12, 12, 64, 32, 1, 1, 0}, Case{3, 7, 9, 16, 8, 1, 2, 0},
                        Case{2, 32, 32, 3, 32, 3, 2, 1}}) {
    for (bool bf16 : {false, true}) {
      const Tensor x = rnd({k.n, k.h, k.w, k.c}, gen);
      const Tensor w = rnd({k.k, k.r, k.r, k.c}, gen, -0.2, 0.2);
      check_op("conv2d", {x, w}, {false, true},
               [&](auto& v) { return conv2d(v[0], v[1], {k.stride, k.pad}); }, bf16);
    }
  }
}

TEST_CASE("gpu front-ends: linear through cuBLAS, with and without bias") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(3);
  for (bool bf16 : {false, true}) {
    const Tensor x = rnd({5, 67}, gen), w = rnd({11, 67}, gen, -0.3, 0.3), b = rnd({11}, gen);
    check_op("linear+bias", {x, w, b}, {false, true, true},
             [](auto& v) { return linear(v[0], v[1], v[2]); }, bf16);
    check_op("linear", {x, w}, {false, true}, [](auto& v) { return linear(v[0], v[1], Tensor()); },
             bf16);
  }
}

TEST_CASE("gpu front-ends: batch norm (train and eval), channel scale, pooling") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(4);
  for (bool bf16 : {false, true}) {
    const Tensor x = rnd({3, 7, 5, 67}, gen, -2, 3);
    const Tensor g = rnd({67}, gen, 0.5, 1.5), b = rnd({67}, gen);
    for (bool training : {true, false}) {
      // Running statistics are updated in place: each device gets its own copy.
      const Tensor rm = rnd({67}, gen, -0.5, 0.5), rv = rnd({67}, gen, 0.5, 2);
      Tensor rm_cpu = rm.clone(), rv_cpu = rv.clone();
      Tensor rm_gpu = rm.to(Device::cuda(0)), rv_gpu = rv.to(Device::cuda(0));
      check_op(training ? "batch_norm2d train" : "batch_norm2d eval", {x, g, b}, {false, true, true},
               [&](auto& v) {
                 const bool cuda = v[0].device().is_cuda();
                 return batch_norm2d(v[0], v[1], v[2], cuda ? rm_gpu : rm_cpu, cuda ? rv_gpu : rv_cpu,
                                     {training, 0.1, 1e-5});
               },
               bf16);
      expect_match(host(rm_gpu), host(rm_cpu), bf16, "running_mean");
      expect_match(host(rv_gpu), host(rv_cpu), bf16, "running_var");
    }
    const Tensor s = rnd({3, 67}, gen, 0, 1);
    check_op("channel_scale", {x, s}, {false, false},
             [](auto& v) { return channel_scale(v[0], v[1]); }, bf16);
    check_op("max_pool2d", {x}, {false},
             [](auto& v) { return max_pool2d(v[0], {3, 2, 1, false, true}); }, bf16);
    check_op("avg_pool2d ceil", {x}, {false},
             [](auto& v) { return avg_pool2d(v[0], {2, 2, 0, true, false}); }, bf16);
    check_op("global_avg_pool", {x}, {false}, [](auto& v) { return global_avg_pool(v[0]); }, bf16);
  }
}

TEST_CASE("gpu front-ends: fused losses") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(5);
  for (bool bf16 : {false, true}) {
    const Tensor logits = rnd({9, 11}, gen, -4, 4);
    Tensor targets = rnd({9, 11}, gen, 0, 1);
    const Tensor pw = rnd({11}, gen, 0.5, 3);
    check_op("bce_with_logits", {logits, targets}, {false, true},
             [](auto& v) { return bce_with_logits(v[0], v[1].detach()); }, bf16);
    check_op("bce_with_logits pos_weight", {logits, targets, pw}, {false, true, true},
             [](auto& v) { return bce_with_logits(v[0], v[1].detach(), v[2].detach()); }, bf16);
    const Tensor a = rnd({2, 4, 4, 67}, gen), b = rnd({2, 4, 4, 67}, gen);
    check_op("mse_loss", {a, b}, {false, false}, [](auto& v) { return mse_loss(v[0], v[1]); }, bf16);
  }
}

TEST_CASE("gpu optimizers: multi-tensor SGD and AdamW and gradient clipping match the CPU") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(6);
  const std::vector<Shape> shapes{{64, 3, 3, 32}, {67}, {11, 2048}, {5000}, {1}};
  for (int kind = 0; kind < 2; ++kind) {
    std::vector<Tensor> pc, pg;
    for (const auto& s : shapes) {
      Tensor p = rnd(s, gen);
      pc.push_back(p.clone().set_requires_grad(true));
      pg.push_back(p.to(Device::cuda(0)).set_requires_grad(true));
    }
    std::unique_ptr<Optimizer> oc, og;
    if (kind == 0) {
      SgdHyper h;
      h.lr = 0.05;
      h.momentum = 0.9;
      h.weight_decay = 1e-4;
      h.nesterov = true;
      oc = std::make_unique<Sgd>(pc, h);
      og = std::make_unique<Sgd>(pg, h);
    } else {
      AdamHyper h;
      h.lr = 1e-2;
      h.weight_decay = 0.05;
      h.decoupled = true;
      oc = std::make_unique<Adam>(pc, h);
      og = std::make_unique<Adam>(pg, h);
    }
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < pc.size(); ++i) {
        const Tensor g = rnd(pc[i].shape(), gen, -2, 2);
        pc[i].set_grad(g);
        pg[i].set_grad(g.to(Device::cuda(0)));
      }
      const double nc = clip_grad_norm(pc, 5.0), ng = clip_grad_norm(pg, 5.0);
      CHECK(ng == doctest::Approx(nc).epsilon(1e-6));
      oc->step();
      og->step();
    }
    for (size_t i = 0; i < pc.size(); ++i)
      expect_match(host(pg[i]), host(pc[i]), false, oc->name() + " parameter " + std::to_string(i));
  }
}

TEST_CASE("gpu model: seresnet_tiny forward and backward match the CPU, fp32 and bf16") {
  RZ_SKIP_WITHOUT_GPU();
  for (bool bf16 : {false, true}) {
    ResNetConfig cfg = resnet_config("seresnet_tiny");
    cfg.num_classes = 11;
    auto mc = create_resnet(cfg, 3), mg = create_resnet(cfg, 3);
    mg->to(Device::cuda(0));
    Generator gen(9);
    Tensor x = Tensor::normal({2, 64, 64, 3}, 0, 1, gen);
    if (bf16) x = x.to(DType::BF16).to(DType::F32);  // both sides see the same input
    const Tensor y = rnd({2, 11}, gen, 0, 1);
    const double lc = model_step(*mc, x, y, false), lg = model_step(*mg, x, y, bf16);
    CAPTURE(bf16);
    CHECK(lg == doctest::Approx(lc).epsilon(bf16 ? 2e-2 : 1e-4));
    const Compare all = grads_against(*mg, *mc);
    if (bf16) {
      const double noise = bf16_gradient_noise(cfg, 3, x, y);
      INFO("all parameter gradients: max rel ", all.rel_max(), ", nmse ", all.nmse(),
           "; bf16 yardstick ", noise);
      CHECK(all.nmse() <= std::max(1e-2, noise));
    } else {
      INFO("all parameter gradients: max rel ", all.rel_max(), ", nmse ", all.nmse());
      CHECK(all.rel_max() <= 1e-3);
    }
    // BN running statistics were updated on the device.
    const auto bc = mc->named_buffers(), bg = mg->named_buffers();
    Compare stats;
    for (size_t i = 0; i < bc.size(); ++i)
      if (is_floating(bc[i].second.dtype())) stats.add(host(bg[i].second), host(bc[i].second));
    CHECK(stats.nmse() <= (bf16 ? 1e-3 : 1e-8));
  }
}

// In bf16 the fused GPU model may differ from the f32 CPU model by no more than
// twice what the unfused GPU model in bf16 does (plus 1e-3): the fused kernels
// add no error of their own beyond bf16 execution.
TEST_CASE("gpu model: the fused block ops (SE tail, BN + ReLU) on CUDA match the unfused CPU model") {
  RZ_SKIP_WITHOUT_GPU();
  for (bool bf16 : {false, true}) {
    ResNetConfig cfg = resnet_config("seresnet_tiny");
    cfg.num_classes = 11;
    auto mc = create_resnet(cfg, 6), mp = create_resnet(cfg, 6);
    cfg.fused_se = true;
    cfg.fused_bn = true;
    auto mg = create_resnet(cfg, 6);
    for (auto* m : {mc.get(), mp.get(), mg.get()}) {
      Generator g(8);
      for (auto& [name, p] : m->named_parameters())
        if (name.find("bn3.weight") != std::string::npos) p.copy_(Tensor::uniform(p.shape(), 0.5, 1.5, g));
    }
    mg->to(Device::cuda(0));
    mp->to(Device::cuda(0));
    Generator gen(12);
    Tensor x = Tensor::normal({2, 64, 64, 3}, 0, 1, gen);
    if (bf16) x = x.to(DType::BF16).to(DType::F32);
    const Tensor y = rnd({2, 11}, gen, 0, 1);
    const double lc = model_step(*mc, x, y, false), lg = model_step(*mg, x, y, bf16);
    model_step(*mp, x, y, bf16);
    CAPTURE(bf16);
    CHECK(lg == doctest::Approx(lc).epsilon(bf16 ? 2e-2 : 1e-4));
    const Compare all = grads_against(*mg, *mc), plain = grads_against(*mp, *mc);
    INFO("fused vs unfused CPU gradients: max rel ", all.rel_max(), ", nmse ", all.nmse(),
         "; unfused GPU: nmse ", plain.nmse());
    if (bf16)
      CHECK(all.nmse() <= 2 * plain.nmse() + 1e-3);
    else
      CHECK(all.rel_max() <= 1e-3);
  }
}

TEST_CASE("gpu model: conv + BN through the native conv epilogue (statistics, folded eval BN) matches the CPU model") {
  RZ_SKIP_WITHOUT_GPU();
  struct NativeConvs {  // every conv_bn_act takes the epilogue path; restored on exit
    EngineCudaOptions& opts = engine_cuda_context(0).options;
    const EngineCudaOptions saved = opts;
    NativeConvs() { opts.conv_impl = ConvImpl::Native; }
    ~NativeConvs() { opts = saved; }
  } native;
  for (const auto& [bf16, fused_se] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
    ResNetConfig cfg = resnet_config("seresnet_tiny");
    cfg.num_classes = 11;
    auto mc = create_resnet(cfg, 9), mp = create_resnet(cfg, 9);  // mp: unfused on the GPU
    cfg.fused_bn = true;
    cfg.fused_conv_bn = true;
    cfg.fused_se = fused_se;  // conv3's per-image sums feed the SE tail
    auto mg = create_resnet(cfg, 9);
    for (auto* m : {mc.get(), mp.get(), mg.get()}) {  // non-zero bn3 weights so the SE path matters
      Generator g(8);
      for (auto& [name, p] : m->named_parameters())
        if (name.find("bn3.weight") != std::string::npos) p.copy_(Tensor::uniform(p.shape(), 0.5, 1.5, g));
    }
    mg->to(Device::cuda(0));
    mp->to(Device::cuda(0));
    Generator gen(13);
    Tensor x = Tensor::normal({2, 64, 64, 3}, 0, 1, gen);
    if (bf16) x = x.to(DType::BF16).to(DType::F32);
    const Tensor y = rnd({2, 11}, gen, 0, 1);
    const Tensor xg = x.to(Device::cuda(0)).to(bf16 ? DType::BF16 : DType::F32);
    const double lc = model_step(*mc, x, y, false), lg = model_step(*mg, x, y, bf16);
    model_step(*mp, x, y, bf16);
    CAPTURE(bf16);
    CAPTURE(fused_se);
    CHECK(lg == doctest::Approx(lc).epsilon(bf16 ? 2e-2 : 1e-4));
    const Compare grads = grads_against(*mg, *mc), plain = grads_against(*mp, *mc);
    Compare stats;
    const auto bc = mc->named_buffers(), bg = mg->named_buffers();
    for (size_t i = 0; i < bc.size(); ++i)
      if (is_floating(bc[i].second.dtype())) stats.add(host(bg[i].second), host(bc[i].second));
    INFO("gradients: max rel ", grads.rel_max(), ", nmse ", grads.nmse(), "; unfused GPU nmse ",
         plain.nmse(), "; running stats nmse ", stats.nmse());
    if (bf16)
      CHECK(grads.nmse() <= 2 * plain.nmse() + 1e-3);  // as in the fused block ops test
    else
      CHECK(grads.rel_max() <= 1e-3);
    CHECK(stats.nmse() <= (bf16 ? 1e-3 : 1e-8));
    // Eval: the folded BN + ReLU in the epilogue, no gradients.
    NoGradGuard no_grad;
    mc->eval();
    mg->eval();
    Compare logits;
    logits.add(host(mg->forward(xg)), host(mc->forward(x)));
    INFO("eval logits nmse ", logits.nmse());
    CHECK(logits.nmse() <= (bf16 ? 1e-3 : 1e-8));
  }
}

TEST_CASE("gpu training: a few AdamW steps of seresnet_tiny agree with the CPU run") {
  RZ_SKIP_WITHOUT_GPU();
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto mc = create_resnet(cfg, 4), mg = create_resnet(cfg, 4);
  mg->to(Device::cuda(0));
  AdamHyper h;
  h.lr = 1e-3;
  h.decoupled = true;
  h.weight_decay = 1e-4;
  Adam oc(mc->parameters(), h), og(mg->parameters(), h);
  Generator gen(10);
  std::vector<double> losses_c, losses_g;
  for (int step = 0; step < 4; ++step) {
    const Tensor x = Tensor::normal({4, 64, 64, 3}, 0, 1, gen);
    const Tensor y = rnd({4, 11}, gen, 0, 1);
    Tensor lc = bce_with_logits(mc->forward(x), y);
    Tensor lg = bce_with_logits(mg->forward(x.to(Device::cuda(0))), y.to(Device::cuda(0)));
    losses_c.push_back(lc.item());
    losses_g.push_back(lg.item());
    lc.backward();
    lg.backward();
    oc.step();
    og.step();
    oc.zero_grad();
    og.zero_grad();
  }
  for (size_t i = 0; i < losses_c.size(); ++i)
    CHECK(losses_g[i] == doctest::Approx(losses_c[i]).epsilon(1e-3));
  Compare w;
  const auto pc = mc->named_parameters(), pg = mg->named_parameters();
  for (size_t i = 0; i < pc.size(); ++i) w.add(host(pg[i].second), host(pc[i].second));
  INFO("weights after 4 steps: max rel ", w.rel_max());
  CHECK(w.rel_max() <= 1e-3);
}

TEST_CASE("gpu graph: a captured eval forward replays with new inputs like eager runs") {
  RZ_SKIP_WITHOUT_GPU();
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto m = create_resnet(cfg, 5);
  m->to(Device::cuda(0));
  m->eval();
  NoGradGuard no_grad;
  Generator gen(11);
  Tensor x_static = Tensor::normal({2, 64, 64, 3}, 0, 1, gen).to(Device::cuda(0));
  Tensor y_static = Tensor::empty({2, 11}, DType::F32, Device::cuda(0));
  y_static.copy_(m->forward(x_static));  // warm-up: algorithms measured, workspace sized
  CudaGraph graph;
  graph.begin_capture(0);
  y_static.copy_(m->forward(x_static));
  graph.end_capture();
  CHECK(graph.node_count() > 10);
  for (int i = 0; i < 3; ++i) {
    const Tensor x = Tensor::normal({2, 64, 64, 3}, 0, 1, gen).to(Device::cuda(0));
    x_static.copy_(x);
    graph.replay();
    const Tensor eager = m->forward(x);
    expect_match(host(y_static), host(eager), false, "graph replay " + std::to_string(i));
  }
}

// As a training loop does with its loss: the tensor a variable held before the
// capture is released inside it. CUDA refuses a captured free of memory the
// graph did not allocate; the graph must keep that memory instead, and no
// error may be left behind for a later launch check to report.
TEST_CASE("gpu graph: a tensor released during the capture is freed with the graph, not in it") {
  RZ_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Generator gen(14);
  const Tensor x = Tensor::uniform({4099}, -1, 1, gen).to(gpu);
  Tensor y = scale(x, 2.0);  // eager, outside any capture
  {
    CudaGraph graph;
    graph.begin_capture(0);
    y = scale(x, 3.0);  // releases the eager result inside the capture
    graph.end_capture();
    for (int i = 0; i < 3; ++i) {
      graph.replay();
      expect_match(host(y), host(scale(x, 3.0)), false, "replay " + std::to_string(i));
    }
    y = Tensor();  // graph memory, released before the graph
  }
  Tensor z = Tensor::ones({33}).to(gpu);
  CHECK_NOTHROW(z.fill_(2.0));
  CHECK(host(z) == std::vector<float>(33, 2.0f));
}

TEST_CASE("gpu graph: a captured whole training step replays like eager AdamW steps, and its gate skips a step") {
  RZ_SKIP_WITHOUT_GPU();
  ResNetConfig cfg = resnet_config("seresnet_tiny");
  cfg.num_classes = 11;
  auto me = create_resnet(cfg, 13), mg = create_resnet(cfg, 13);
  me->to(Device::cuda(0));
  mg->to(Device::cuda(0));
  AdamHyper h;
  h.lr = 1e-3;
  h.decoupled = true;
  Adam oe(me->parameters(), h), og(mg->parameters(), h);
  Tensor xs = Tensor::empty({4, 64, 64, 3}, DType::F32, Device::cuda(0));
  Tensor ys = Tensor::empty({4, 11}, DType::F32, Device::cuda(0));
  Tensor loss_s = Tensor::empty({}, DType::F32, Device::cuda(0));
  // The update gate: NaN at step 4 (as a non-finite loss would be), where the
  // eager run skips its update and the replayed one must change nothing.
  Tensor gate = Tensor::empty({}, DType::F32, Device::cuda(0));
  CudaGraph graph;
  Generator gen(14);
  for (int step = 0; step < 7; ++step) {
    const bool skip = step == 4;
    gate.fill_(skip ? std::numeric_limits<double>::quiet_NaN() : 1.0);
    const Tensor x = Tensor::normal({4, 64, 64, 3}, 0, 1, gen), y = rnd({4, 11}, gen, 0, 1);
    const double lr = 1e-3 * (1.0 - 0.1 * step);  // a schedule: replays must see each step's lr
    oe.set_lr(lr);
    og.set_lr(lr);
    Tensor le = bce_with_logits(me->forward(x.to(Device::cuda(0))), y.to(Device::cuda(0)));
    const double eager_loss = le.item();
    if (!skip) {
      le.backward();
      oe.step();
    }
    oe.zero_grad();
    xs.copy_(x);
    ys.copy_(y);
    auto body = [&] {
      Tensor l = bce_with_logits(mg->forward(xs), ys);
      l.backward();
      og.step();
      og.zero_grad();
      loss_s.copy_(l);
    };
    if (step == 0) {
      body();
      og.enter_graph_mode();
      og.set_graph_gate(gate);
    } else {
      og.stage_graph_step();
      if (step == 1) {
        body();
      } else {
        if (!graph.ready()) {
          graph.begin_capture(0);
          body();
          graph.end_capture();
        }
        graph.replay();
      }
      if (skip) og.unstage_graph_step();
    }
    CAPTURE(step);
    CHECK(loss_s.item() == doctest::Approx(eager_loss).epsilon(1e-5));
  }
  Compare w;
  const auto pe = me->named_parameters(), pg = mg->named_parameters();
  for (size_t i = 0; i < pe.size(); ++i) w.add(host(pg[i].second), host(pe[i].second));
  INFO("graph vs eager weights after 7 steps (one skipped): max rel ", w.rel_max());
  CHECK(w.rel_max() <= 1e-5);
}

TEST_CASE("gpu front-ends: errors name the op and the offending tensors") {
  RZ_SKIP_WITHOUT_GPU();
  const Tensor a = Tensor::ones({2, 3}, DType::F32, Device::cuda(0));
  const Tensor b = Tensor::ones({2, 3});
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("device mismatch"), Error);
  const Tensor d = Tensor::ones({2, 3}, DType::F64, Device::cuda(0));
  CHECK_THROWS_WITH_AS(relu(d), doctest::Contains("on CUDA"), Error);
}

}  // TEST_SUITE
