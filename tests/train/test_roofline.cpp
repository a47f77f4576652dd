// `ranzcr info --roofline`: the op list of one training step, checked against
// independent counts: PyTorch's flop counter on timm's seresnet152d
// (tools/make_roofline_fixtures.py), the per-stage MACs of `ranzcr info`
// (models/seresnet.cpp's resnet_cost), the published totals, and the
// autograd graph the engine actually records for the same model.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/seresnet.h"
#include "tests/data/temp_dir.h"
#include "tests/run_command.h"
#include "train/roofline.h"
#include "train/roofline_join.h"

using namespace rz;
using rz::test::contains;
using rz::test::read_file;
using rz::test::write_file;

namespace {

RooflineOptions options_for(const std::string& model, int64_t size, int64_t batch, bool bf16 = true) {
  RooflineOptions o;
  o.model = resnet_config(model);
  o.model.num_classes = 11;
  o.image_size = size;
  o.batch = batch;
  o.bf16 = bf16;
  return o;
}

// FLOPs of the convolutions and linear layers of one phase.
double tensor_flops(const std::vector<RooflineOp>& ops, const std::string& phase) {
  double f = 0;
  for (const auto& op : ops)
    if (op.tensor_core && op.phase == phase) f += op.flops;
  return f;
}

std::map<std::string, int64_t> count_kinds(const std::vector<RooflineOp>& ops) {
  std::map<std::string, int64_t> n;
  for (const auto& op : ops) ++n[op.kind];
  return n;
}

// The engine's record of a forward pass: autograd node names, how many
// times each appears, how many gradient sums backward will make (one less
// than the number of consumers of each recorded tensor), and the leaves.
struct Graph {
  std::map<std::string, int64_t> nodes;
  int64_t grad_sums = 0;
  int64_t leaves = 0;
};

Graph walk(const Tensor& root) {
  Graph g;
  std::map<const Node*, int64_t> consumers;
  std::set<const Node*> seen;
  std::vector<std::shared_ptr<Node>> stack{root.grad_fn()};
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto n = stack.back();
    stack.pop_back();
    ++g.nodes[n->name()];
    for (const auto& next : n->next) {
      if (!next) continue;
      ++consumers[next.get()];
      if (seen.insert(next.get()).second) stack.push_back(next);
    }
  }
  for (const auto& [node, k] : consumers) {
    if (node->name() == "AccumulateGrad") ++g.leaves;
    else g.grad_sums += k - 1;
  }
  return g;
}

}  // namespace

TEST_CASE("roofline: convolution and linear FLOPs equal PyTorch's count for timm's seresnet152d, forward and backward") {
  const auto j = nlohmann::json::parse(read_file(std::string(RZ_FIXTURES_DIR) + "/roofline/seresnet152d_flops.json"));
  REQUIRE(j.at("sizes").size() == 2);
  for (const auto& s : j.at("sizes")) {
    const int64_t size = s.at("image_size"), batch = s.at("batch");
    CAPTURE(size);
    auto o = options_for("seresnet152d", size, batch);
    o.model.in_chans = j.at("in_chans");
    const auto ops = training_step_ops(o);
    CHECK(tensor_flops(ops, "forward") == s.at("forward").get<double>());
    CHECK(tensor_flops(ops, "backward") == s.at("backward").get<double>());
  }
}

TEST_CASE("roofline: forward MACs equal ranzcr info's per-stage count and the published seresnet152d totals") {
  for (const char* name : {"seresnet152d", "resnet50d", "seresnet18", "seresnet_tiny_basic", "seresnet200d"}) {
    for (const int64_t size : {64, 224, 320}) {
      CAPTURE(name);
      CAPTURE(size);
      const auto o = options_for(name, size, 3);
      double macs = 0;
      for (const auto& st : resnet_cost(o.model, size)) macs += st.macs;
      CHECK(tensor_flops(training_step_ops(o), "forward") / 2 / 3 == doctest::Approx(macs).epsilon(1e-12));
    }
  }
  // timm lists seresnet152d at about 15.4 GMACs for 256 px; 4x that at 512.
  const double g256 = tensor_flops(training_step_ops(options_for("seresnet152d", 256, 1)), "forward") / 2e9;
  const double g512 = tensor_flops(training_step_ops(options_for("seresnet152d", 512, 1)), "forward") / 2e9;
  CHECK(g256 == doctest::Approx(15.4).epsilon(0.01));
  CHECK(g512 == doctest::Approx(61.7).epsilon(0.01));
}

TEST_CASE("roofline: the op list is the graph the engine records, for every fused option") {
  struct Variant {
    const char* model;
    bool fused_se, fused_bn;
  };
  // The CPU twins record the same ops as CUDA (fused_conv_bn is CUDA-only and
  // counted like fused_bn).
  for (const Variant v : {Variant{"seresnet_tiny", false, false}, Variant{"seresnet_tiny", true, false},
                          Variant{"seresnet_tiny", false, true}, Variant{"seresnet_tiny", true, true},
                          Variant{"seresnet_tiny_basic", false, false}, Variant{"seresnet_tiny_basic", true, true},
                          Variant{"resnet26d", false, false}}) {
    CAPTURE(v.model);
    CAPTURE(v.fused_se);
    CAPTURE(v.fused_bn);
    auto o = options_for(v.model, 64, 2, /*bf16=*/false);
    o.model.fused_se = v.fused_se;
    o.model.fused_bn = v.fused_bn;
    const auto kinds = count_kinds(training_step_ops(o));
    auto kind = [&](const std::string& k) { return kinds.count(k) ? kinds.at(k) : 0; };

    auto model = create_resnet(o.model, 3);
    model->train();
    Tensor x = Tensor::zeros({2, 64, 64, 3}, DType::F32);
    Tensor logits = model->forward(x);
    Tensor loss = bce_with_logits(logits, Tensor::zeros({2, 11}, DType::F32));
    const Graph g = walk(loss);
    auto node = [&](const std::string& n) { return g.nodes.count(n) ? g.nodes.at(n) : 0; };

    CHECK(kind("conv.fwd") == node("conv2d"));
    CHECK(kind("bn.fwd") == node("batch_norm2d"));
    CHECK(kind("bn_act.fwd") == node("batch_norm_act"));
    CHECK(kind("se_tail.fwd") == node("se_block_tail"));
    CHECK(kind("relu.fwd") == node("relu"));
    CHECK(kind("sigmoid.fwd") == node("sigmoid"));
    CHECK(kind("add.fwd") == node("add"));
    CHECK(kind("channel_scale.fwd") == node("channel_scale"));
    CHECK(kind("gap.fwd") == node("global_avg_pool"));
    CHECK(kind("linear.fwd") == node("linear"));
    CHECK(kind("maxpool.fwd") == node("max_pool2d"));
    CHECK(kind("avgpool.fwd") == node("avg_pool2d"));
    CHECK(kind("loss.fwd") == node("bce_with_logits"));
    // Every recorded op is one the list knows (reshape is a view of the SE weights).
    for (const auto& [name, n] : g.nodes) {
      static const std::set<std::string> known{"conv2d",  "batch_norm2d",    "batch_norm_act", "se_block_tail",
                                               "relu",    "sigmoid",         "add",            "channel_scale",
                                               "global_avg_pool", "linear",  "max_pool2d",     "avg_pool2d",
                                               "bce_with_logits", "reshape", "AccumulateGrad"};
      CAPTURE(name);
      CHECK(known.count(name) == 1);
    }
    // Backward: a data gradient for every conv but the stem's first, a sum
    // wherever a tensor feeds two ops, one AccumulateGrad per parameter.
    CHECK(kind("conv.dgrad") == node("conv2d") - 1);
    CHECK(kind("conv.wgrad") == node("conv2d"));
    CHECK(kind("grad.add") == g.grad_sums);
    CHECK(kind("grad.accumulate") == g.leaves);
    CHECK(g.leaves == static_cast<int64_t>(model->named_parameters().size()));
  }
}

TEST_CASE("roofline: bytes and FLOPs of one convolution follow the formula, in bf16 and fp32") {
  // The deep stem's first conv: [N, S, S, 3] -> [N, S/2, S/2, 32], 3x3 stride 2.
  const int64_t N = 4, S = 128, K = 32;
  for (const bool bf16 : {true, false}) {
    CAPTURE(bf16);
    const auto ops = training_step_ops(options_for("seresnet152d", S, N, bf16));
    const double a = bf16 ? 2 : 4;
    const double in = static_cast<double>(N * S * S * 3), out = static_cast<double>(N * (S / 2) * (S / 2) * K);
    const double P = K * 3 * 3 * 3;
    int found = 0;
    for (const auto& op : ops) {
      if (op.layer != "conv1.0") continue;
      if (op.kind == "conv.fwd" || op.kind == "conv.wgrad") {
        CHECK(op.flops == 2 * out * 27);
        CHECK(op.bytes == a * (in + out) + a * P);
        CHECK(op.tensor_core);
        ++found;
      }
      CHECK(op.kind != "conv.dgrad");  // the image needs no gradient
      if (op.kind == "cast.weight.fwd") CHECK(op.bytes == 6 * P);
    }
    CHECK(found == 2);
    // The input cast exists in bf16 only; the optimizer reads and writes 28 bytes a parameter.
    const auto kinds = count_kinds(ops);
    CHECK(kinds.count("cast.input") == (bf16 ? 1u : 0u));
    double params = 0;
    for (const auto& st : resnet_cost(options_for("seresnet152d", S, N).model, S)) params += static_cast<double>(st.params);
    for (const auto& op : ops)
      if (op.kind == "optim.adamw") CHECK(op.bytes == 28 * params);
  }
}

TEST_CASE("roofline: totals on the built-in GPUs behave as the hardware says") {
  const GpuPeaks h100 = gpu_peaks("h100-sxm"), h200 = gpu_peaks("h200"), a100 = gpu_peaks("a100");
  CHECK(h100.bf16_dense_tflops == doctest::Approx(989.4));
  CHECK(h200.hbm_tbps == doctest::Approx(4.8));
  CHECK(a100.bf16_dense_tflops == doctest::Approx(312));
  for (const auto& g : {h100, h200, a100}) CHECK(contains(g.source, "datasheet"));

  const auto o = options_for("seresnet152d", 512, 32);
  const Roofline r100 = roofline(o, h100), r200 = roofline(o, h200);
  double sum = 0, mem = 0;
  for (const auto& op : r100.ops) {
    const double t = std::max(op.flops / r100.peak_flops(op), op.bytes / (h100.hbm_tbps * 1e12));
    CHECK(r100.bound_time(op) == doctest::Approx(t));
    sum += t;
    if (r100.memory_bound(op)) mem += t;
  }
  CHECK(r100.totals.bound_s == doctest::Approx(sum));
  CHECK(r100.totals.memory_bound_s == doctest::Approx(mem));
  CHECK(r100.totals.images_per_s == doctest::Approx(32 / sum));
  CHECK(r100.totals.mfu_ceiling > 0);
  CHECK(r100.totals.mfu_ceiling < 1);
  // Same arithmetic peaks, faster memory: only the memory-bound time shrinks.
  CHECK(r200.totals.bound_s < r100.totals.bound_s);
  CHECK(r200.totals.bound_s > r100.totals.bound_s * 3.35 / 4.8);
  // Fusion moves fewer bytes for the same convolution work; fp32 moves more.
  auto fused = o;
  fused.model.fused_se = fused.model.fused_bn = true;
  const Roofline rf = roofline(fused, h100);
  CHECK(rf.totals.bytes < r100.totals.bytes);
  CHECK(rf.totals.model_flops == doctest::Approx(r100.totals.model_flops).epsilon(1e-12));
  CHECK(rf.totals.bound_s < r100.totals.bound_s);
  const Roofline r32 = roofline(options_for("seresnet152d", 512, 32, false), h100);
  CHECK(r32.totals.bytes > 1.5 * r100.totals.bytes);
  CHECK(r32.totals.bound_s > 3 * r100.totals.bound_s);  // fp32 convs on CUDA cores, twice the bytes
}

TEST_CASE("roofline: a GPU file with a bad field is an error naming the file and the field") {
  const rz::test::TempDir dir("roofline");
  const std::string path = (dir.path() / "mygpu.toml").string();
  const std::string good =
      "name = \"test GPU\"\nbf16_dense_tflops = 100\ntf32_dense_tflops = 50\nfp32_tflops = 10\n"
      "hbm_tbps = 1.5\nmemory_gib = 24\nsource = \"made up for a test\"\n";
  write_file(path, good);
  const GpuPeaks g = gpu_peaks(path);
  CHECK(g.hbm_tbps == 1.5);
  CHECK(g.key == path);
  write_file(path, "name = \"x\"\nbf16_dense_tflops = 100\ntf32_dense_tflops = 50\nfp32_tflops = 10\n"
                   "hbm_tbps = -1\nmemory_gib = 24\nsource = \"s\"\n");
  CHECK_THROWS_WITH_AS(gpu_peaks(path), doctest::Contains("mygpu.toml: hbm_tbps = -1"), Error);
  write_file(path, "name = \"x\"\n");
  CHECK_THROWS_WITH_AS(gpu_peaks(path), doctest::Contains("'bf16_dense_tflops' is missing"), Error);
  write_file(path, "name = [\n");
  CHECK_THROWS_WITH_AS(gpu_peaks(path), doctest::Contains("mygpu.toml:"), Error);
  CHECK_THROWS_WITH_AS(gpu_peaks("b200"), doctest::Contains("h100-sxm"), Error);
}

TEST_CASE("roofline: ranzcr info --roofline prints the table and writes every op as JSON") {
  const rz::test::TempDir dir("roofline_cli");
  const std::string json = (dir.path() / "r.json").string();
  const auto o = rz::test::run_command(std::string(RZ_CLI_PATH) +
                                       " info --roofline --model seresnet152d --img-size 512 --batch 32 --gpu h200"
                                       " --json " + json);
  INFO(o.text);
  REQUIRE(o.status == 0);
  CHECK(contains(o.text, "NVIDIA H200"));
  CHECK(contains(o.text, "conv.wgrad"));
  CHECK(contains(o.text, "step lower bound"));
  CHECK(contains(o.text, "MFU ceiling"));
  const auto j = nlohmann::json::parse(read_file(json));
  const Roofline r = roofline(options_for("seresnet152d", 512, 32), gpu_peaks("h200"));
  CHECK(j.at("ops").size() == r.ops.size());
  CHECK(j.at("totals").at("bound_s").get<double>() == doctest::Approx(r.totals.bound_s));
  CHECK(j.at("gpu").at("hbm_tbps").get<double>() == 4.8);
  // A config decides the model: flags that would contradict it are refused.
  const std::string cfg = (dir.path() / "c.toml").string();
  write_file(cfg, "[model]\nname = \"seresnet_tiny\"\nimg_size = 64\n[train]\nbatch = 4\n");
  const auto c = rz::test::run_command(std::string(RZ_CLI_PATH) + " info --roofline --config " + cfg);
  INFO(c.text);
  CHECK(c.status == 0);
  CHECK(contains(c.text, "seresnet_tiny at 64 px, batch 4, fp32"));
  const auto bad = rz::test::run_command(std::string(RZ_CLI_PATH) + " info --roofline --config " + cfg + " --batch 8");
  CHECK(bad.status != 0);
  CHECK(contains(bad.text, "--batch"));
  // --measured joins bench outputs with the model.
  const auto joined = rz::test::run_command(std::string(RZ_CLI_PATH) + " info --roofline --measured " +
                                            RZ_FIXTURES_DIR + "/roofline/h200-2026-12-04/train_step_bench-bf16.json");
  INFO(joined.text);
  CHECK(joined.status == 0);
  CHECK(contains(joined.text, "step bf16 b32 cudnn"));
  CHECK(contains(joined.text, "bounds on h200"));
}

TEST_CASE("roofline join: a recorded H200 sample of the benches, as % of roofline per kernel class") {
  const std::string dir = std::string(RZ_FIXTURES_DIR) + "/roofline/h200-2026-12-04/";
  const JoinResult r = roofline_join({dir + "train_step_bench-bf16.json", dir + "conv_bench.txt",
                                      dir + "ops_gpu_bench.txt"});
  CHECK(r.gpu.key == "h200");  // from the files' device line
  std::map<std::string, JoinRow> by;
  for (const auto& row : r.rows) {
    CAPTURE(row.klass);
    CHECK(row.percent() > 0);
    CHECK(row.percent() <= 100);
    by[row.klass] = row;
  }
  // The step: the roofline of the same configuration over the measured time.
  const auto j = nlohmann::json::parse(read_file(dir + "train_step_bench-bf16.json"));
  auto o = options_for("seresnet152d", 512, 32);
  o.optimizer = "sgd";
  const double bound = roofline(o, gpu_peaks("h200")).totals.bound_s;
  REQUIRE(by.count("step bf16 b32 cudnn") == 1);
  CHECK(by["step bf16 b32 cudnn"].measured_s == doctest::Approx(j.at("ms_per_step").get<double>() / 1e3));
  CHECK(by["step bf16 b32 cudnn"].bound_s == doctest::Approx(bound));
  // conv_bench: every shape, weighted by its layer count, adds up to the
  // network total the bench printed itself (32.25 ms for cuDNN's forward).
  REQUIRE(by.count("conv fwd cudnn") == 1);
  CHECK(by["conv fwd cudnn"].rows == 33);
  CHECK(by["conv fwd cudnn"].measured_s * 1e3 == doctest::Approx(32.25).epsilon(0.002));
  CHECK(by["conv wgrad v3"].rows == 20);
  // ops_gpu_bench: the bound is the compulsory bytes at the published 4.8 TB/s.
  REQUIRE(by.count("adamw_step f32") == 1);
  CHECK(by["adamw_step f32"].bound_s == doctest::Approx(1814.8e6 / 4.8e12).epsilon(1e-4));
  CHECK(by["adamw_step f32"].measured_s == doctest::Approx(0.4859e-3));
  CHECK(contains(join_table(r), "% roofline"));
}

TEST_CASE("roofline join: small bench files give the formula's numbers; bad files are errors naming them") {
  const rz::test::TempDir dir("roofline_join");
  const std::string ops = (dir.path() / "ops.txt").string(), conv = (dir.path() / "conv.txt").string();
  write_file(ops,
             "ops_gpu_bench: NVIDIA H100 80GB HBM3, sm_90\n"
             "op                 dtype site    shape                         MB median_ms    min_ms     GB/s   %HBM  note\n"
             "relu_fwd           bf16  stem    32x256x256x64              536.9    0.5000    0.4900     1000  30.0%  \n"
             "relu_fwd           bf16  layer1  32x128x128x256             536.9    0.3000    0.2900     1000  30.0%  x\n");
  write_file(conv,
             "conv_bench: seresnet152d convolutions, batch 8, 512x512, bf16; 1 layers, 1 distinct shapes\n"
             "device: NVIDIA H100 80GB HBM3, sm_90; nominal\n"
             "first layer                 N    H     C     K RxS  s cnt pass  |  cudnn ms TFLOP/s |     v2 ms TFLOP/s  ratio     nmse\n"
             "layer1.0.conv2              8  128    64    64 3x3  1   3 fwd   |     0.050   200.0 |         -       -      -        -\n");
  const JoinResult r = roofline_join({ops, conv});
  CHECK(r.gpu.key == "h100-sxm");
  REQUIRE(r.rows.size() == 2);
  CHECK(r.rows[0].klass == "relu_fwd bf16");
  CHECK(r.rows[0].rows == 2);
  CHECK(r.rows[0].measured_s == doctest::Approx(0.8e-3));
  CHECK(r.rows[0].bound_s == doctest::Approx(2 * 536.9e6 / 3.35e12));
  CHECK(r.rows[1].klass == "conv fwd cudnn");  // v2's "-" is no measurement
  // 3x3, 64 -> 64 channels at 128x128, batch 8: 2 * 8*128*128*64 * 9*64 FLOPs
  // and 2 bytes * (x + y + w); three layers of it.
  const double flops = 2.0 * 8 * 128 * 128 * 64 * 9 * 64;
  const double bytes = 2.0 * (2.0 * 8 * 128 * 128 * 64 + 64 * 9 * 64);
  CHECK(r.rows[1].bound_s == doctest::Approx(3 * std::max(flops / 989.4e12, bytes / 3.35e12)));
  CHECK(r.rows[1].measured_s == doctest::Approx(3 * 0.05e-3));
  // An explicit GPU wins over the files' device.
  CHECK(roofline_join({ops}, "a100").rows[0].bound_s == doctest::Approx(2 * 536.9e6 / 2.039e12));

  const std::string other = (dir.path() / "other.txt").string();
  write_file(other, "hello\n");
  CHECK_THROWS_WITH_AS(roofline_join({other}), doctest::Contains("other.txt:1: not a train_step_bench"), Error);
  write_file(other, "{\"bench\": \"something\"}\n");
  CHECK_THROWS_WITH_AS(roofline_join({other}), doctest::Contains("other.txt"), Error);
  const std::string h200 = (dir.path() / "h200.txt").string();
  write_file(h200, "ops_gpu_bench: NVIDIA H200, sm_90\n"
                   "relu_fwd           bf16  stem    32x256x256x64              536.9    0.5000    0.4900     1000  30.0%\n");
  CHECK_THROWS_WITH_AS(roofline_join({ops, h200}), doctest::Contains("h200.txt was measured on 'NVIDIA H200"),
                       Error);
}
