// One training step of a model on the GPU through the engine (the same path
// the trainer takes): forward in train mode, fused BCE-with-logits on 11
// labels, backward, one optimizer step over fp32 master weights, zero_grad.
//
//   x       [B, S, S, 3] normal(0, 1) on cuda:0, cast to bf16 for --precision bf16
//           (parameters stay fp32; the ops take bf16 activations with fp32
//           weights, engine/ops.h); targets fp32 [B, 11] of 0/1
//   optim   --optim sgd: rz::Sgd lr 0.01, momentum 0.9, weight decay 1e-4
//           --optim adamw: rz::Adam lr 1e-3, weight decay 0.01, decoupled
//
// Timing: --warmup steps (the first one also picks the cuDNN algorithms), then
// --steps steps, each between two cudaDeviceSynchronize calls and bracketed by
// cudaEvents on cudaStreamPerThread (the stream the engine issues all work
// on); the median is reported, with the host wall time of the same steps.
// Peak memory is the high-water mark of the device's default memory pool
// (every engine tensor comes from cudaMallocAsync on it), reset after warm-up,
// so it is the peak of the timed steps. Achieved TFLOP/s counts 3 x 2 x the
// forward MACs of rz::resnet_cost per image (forward, data grad, weight grad);
// MFU divides that by the device's nominal dense bf16 tensor-core peak
// (rz::bench::nominal_bf16_tflops), also for fp32 runs.
//
//   train_step_bench                                   # seresnet152d 512x512, batch 32, bf16, sgd
//   train_step_bench --precision fp32 --batch 8 --steps 5
//   train_step_bench --json native.json --pytorch-json torch.json
//   train_step_bench --graph --fused-se --conv-impl auto   # the opt-in fast paths
//
// --pytorch-json FILE reads what bench/pytorch/train_step.py wrote for the same
// configuration and prints native/eager and native/compile ratios (> 1: the
// engine is faster). Without a usable CUDA device (or in a build without CUDA)
// it prints one line and exits 0; an error (out of GPU memory included) is one
// line on stderr and exit status 1.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/gpu_bench.h"
#include "engine/autograd.h"
#include "engine/conv_autotune.h"
#include "engine/cuda_context.h"
#include "engine/cuda_graph.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "models/seresnet.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif

namespace {

struct Options {
  std::string model = "seresnet152d";
  int64_t img_size = 512;
  int64_t batch = 32;
  int64_t num_classes = 11;
  int steps = 10;
  int warmup = 3;
  std::string precision = "bf16";  // fp32 | bf16
  std::string optim = "sgd";       // sgd | adamw
  bool tf32 = false;               // fp32 convolutions/GEMMs may use TF32
  bool fused_se = false;           // model.fused_se, fused_bn, fused_conv_bn: the fused block ops
  bool graph = false;              // capture the whole step into a CUDA graph and replay it
  std::string conv_impl = "cudnn"; // cudnn | native | auto (unvalidated variants allowed)
  uint64_t seed = 0;
  std::string json;          // write one JSON object here
  std::string pytorch_json;  // read bench/pytorch/train_step.py's output from here
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: train_step_bench [--model NAME] [--img-size S] [--batch B] [--steps N]\n"
               "                        [--warmup N] [--precision fp32|bf16] [--optim sgd|adamw]\n"
               "                        [--tf32] [--fused-se] [--graph] [--conv-impl cudnn|native|auto]\n"
               "                        [--seed N] [--json FILE] [--pytorch-json FILE]\n"
               "  defaults: seresnet152d, 512, batch 32, 10 steps after 3 warm-up, bf16, sgd\n");
}

#if defined(RZ_HAVE_CUDA)

// Out-of-memory as the engine and the libraries report it.
bool is_oom(const std::string& what) {
  for (const char* s : {"out of GPU memory", "cudaErrorMemoryAllocation",
                        "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "out of memory"})
    if (what.find(s) != std::string::npos) return true;
  return false;
}

nlohmann::json config_json(const Options& o) {
  return {{"model", o.model},
          {"img_size", o.img_size},
          {"batch", o.batch},
          {"num_classes", o.num_classes},
          {"precision", o.precision},
          {"optim", o.optim},
          {"steps", o.steps},
          {"warmup", o.warmup},
          {"tf32", o.tf32},
          {"fused_se", o.fused_se},
          {"graph", o.graph},
          {"conv_impl", o.conv_impl}};
}

void write_json(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f.good()) std::fprintf(stderr, "train_step_bench: could not write %s\n", path.c_str());
}

// The ratios of compare_with_pytorch from the parsed JSON; throws
// nlohmann::json's exceptions on fields of an unexpected type.
nlohmann::json compare_modes(const nlohmann::json& t, const Options& o, double native_ips,
                             double native_peak_bytes) {
  nlohmann::json out = nlohmann::json::object();
  if (t.contains("skipped")) {
    std::printf("pytorch: the PyTorch run was skipped: %s\n", t["skipped"].dump().c_str());
    return out;
  }
  for (const char* key : {"model", "img_size", "batch", "precision", "optim"}) {
    const nlohmann::json mine = config_json(o)[key];
    if (t.contains(key) && t[key] != mine)
      std::printf(
          "pytorch: WARNING: %s differs (native %s, pytorch %s): ratios compare different work\n",
          key, mine.dump().c_str(), t[key].dump().c_str());
  }
  if (t.contains("device")) std::printf("pytorch: device %s\n", t["device"].dump().c_str());
  for (const char* mode : {"eager", "compile"}) {
    if (!t.contains("modes") || !t["modes"].contains(mode)) continue;
    const nlohmann::json& m = t["modes"][mode];
    // A number, or 0 when absent or not a number (null: a non-finite value).
    const auto num = [&m](const char* key) {
      const auto it = m.find(key);
      return it != m.end() && it->is_number() ? it->get<double>() : 0.0;
    };
    const double ips = num("images_per_s");
    if (ips <= 0) {
      const auto err = m.find("error");
      std::printf("pytorch %s: no result (%s)\n", mode,
                  err != m.end() && err->is_string() ? err->get<std::string>().c_str() : "not run");
      continue;
    }
    const double ratio = native_ips / ips;
    const double mem = num("peak_mem_bytes");
    std::printf("native/%s: %.3fx images/s (native %.2f, pytorch %s %.2f images/s, %.1f ms/step)",
                mode, ratio, native_ips, mode, ips, num("ms_per_step"));
    if (mem > 0) std::printf("; peak memory native/%s %.2fx", mode, native_peak_bytes / mem);
    std::printf("\n");
    out[std::string("native_over_") + mode] = ratio;
    out[std::string(mode) + "_images_per_s"] = ips;
    if (mem > 0) out[std::string("native_over_") + mode + "_memory"] = native_peak_bytes / mem;
  }
  return out;
}

// Prints native/eager and native/compile ratios from the PyTorch script's
// JSON and returns them (an empty object when the file is missing or holds no
// usable mode). Never throws: the native numbers stand on their own.
nlohmann::json compare_with_pytorch(const std::string& path, const Options& o, double native_ips,
                                    double native_peak_bytes) {
  nlohmann::json out = nlohmann::json::object();
  std::ifstream f(path);
  if (!f.good()) {
    std::printf("pytorch: %s not found; no side-by-side ratios\n", path.c_str());
    return out;
  }
  nlohmann::json t;
  try {
    t = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    std::printf("pytorch: %s is not valid JSON (%s); no side-by-side ratios\n", path.c_str(),
                e.what());
    return out;
  }
  try {
    return compare_modes(t, o, native_ips, native_peak_bytes);
  } catch (const std::exception& e) {  // a field of an unexpected type
    std::printf("pytorch: unexpected content in %s (%s); no side-by-side ratios\n", path.c_str(),
                e.what());
    return out;
  }
}

int run(const Options& opt) {
  const rz::Device dev = rz::Device::cuda(0);
  RZ_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  RZ_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string device = rz::bench::device_line(0);
  rz::engine_cuda_context(0).options.allow_tf32 = opt.tf32;
  rz::engine_cuda_context(0).options.conv_impl = rz::parse_conv_impl(opt.conv_impl);
  rz::engine_cuda_context(0).options.allow_unvalidated_kernels = true;  // measuring them is the point

  rz::ResNetConfig cfg = rz::resnet_config(opt.model);
  cfg.num_classes = opt.num_classes;
  cfg.fused_se = opt.fused_se;
  cfg.fused_bn = opt.fused_se;  // --fused-se turns on every fused block op:
  cfg.fused_conv_bn = opt.fused_se;  // BN work in native conv epilogues (with native plans)
  double macs = 0;
  for (const rz::StageCost& s : rz::resnet_cost(cfg, opt.img_size)) macs += s.macs;

  std::printf("train_step_bench: %s\n", device.c_str());
  std::printf(
      "%s %lldx%lld, batch %lld, %s activations (fp32 master weights), %s; %d warm-up + %d "
      "timed steps; forward %.2f GMAC/image\n",
      opt.model.c_str(), static_cast<long long>(opt.img_size), static_cast<long long>(opt.img_size),
      static_cast<long long>(opt.batch), opt.precision.c_str(), opt.optim.c_str(), opt.warmup,
      opt.steps, macs / 1e9);
  std::fflush(stdout);

  auto model = rz::create_resnet(cfg, opt.seed);
  model->to(dev);
  model->train();

  rz::Generator gen(opt.seed + 1);
  rz::Tensor x = rz::Tensor::normal({opt.batch, opt.img_size, opt.img_size, 3}, 0, 1, gen).to(dev);
  if (opt.precision == "bf16") x = x.to(rz::DType::BF16);
  std::vector<float> labels(static_cast<size_t>(opt.batch * opt.num_classes));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = (i * 7919 % 5 == 0) ? 1.f : 0.f;
  const rz::Tensor targets = rz::Tensor::from_vector(labels, {opt.batch, opt.num_classes}).to(dev);

  std::unique_ptr<rz::Optimizer> optimizer;
  if (opt.optim == "sgd") {
    rz::SgdHyper h;
    h.lr = 0.01;
    h.momentum = 0.9;
    h.weight_decay = 1e-4;
    optimizer = std::make_unique<rz::Sgd>(model->parameters(), h);
  } else {
    rz::AdamHyper h;
    h.lr = 1e-3;
    h.weight_decay = 0.01;
    h.decoupled = true;
    optimizer = std::make_unique<rz::Adam>(model->parameters(), h);
  }

  rz::Tensor loss;
  auto body = [&] {
    rz::NvtxRange range("train_step");
    loss = rz::bce_with_logits(model->forward(x), targets);
    loss.backward();
    optimizer->step();
    model->zero_grad();
  };
  // --graph: step 1 eager, then the optimizer's graph mode, step 2 eager in
  // that mode, step 3 captured; every later step is a replay (x, targets and
  // the parameters keep their addresses). The loss tensor captured in step 3
  // is graph memory rewritten by each replay.
  rz::CudaGraph graph;
  int graph_steps = 0;
  auto step = [&] {
    if (!opt.graph) return body();
    if (graph_steps++ == 0) {
      body();
      optimizer->enter_graph_mode();
      return;
    }
    optimizer->stage_graph_step();
    if (graph_steps == 2) return body();
    if (!graph.ready()) {
      graph.begin_capture(0);
      body();
      graph.end_capture();
      std::printf("captured the step: %lld graph nodes\n", static_cast<long long>(graph.node_count()));
    }
    graph.replay();
  };

  std::vector<double> warm_ms;
  for (int i = 0; i < opt.warmup; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    warm_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    std::printf("warm-up step %d: %.1f ms (host wall)\n", i + 1, warm_ms.back());
    std::fflush(stdout);
  }

  const size_t steady_bytes = rz::bench::pool_used_bytes(0);
  rz::bench::reset_pool_peak(0);
  rz::bench::reset_graph_mem_peak(0);
  cudaEvent_t start = nullptr, stop = nullptr;
  RZ_CUDA_CHECK(cudaEventCreate(&start));
  RZ_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms, wall_ms;
  for (int i = 0; i < opt.steps; ++i) {
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    RZ_CUDA_CHECK(cudaEventRecord(start, cudaStreamPerThread));
    step();
    RZ_CUDA_CHECK(cudaEventRecord(stop, cudaStreamPerThread));
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    wall_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    float t = 0;
    RZ_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const size_t pool_peak = rz::bench::pool_peak_bytes(0);
  const size_t graph_peak = rz::bench::graph_mem_peak_bytes(0);
  const size_t peak_bytes = pool_peak + graph_peak;
  const double final_loss = loss.defined() ? loss.item() : 0.0;

  std::sort(ms.begin(), ms.end());
  std::sort(wall_ms.begin(), wall_ms.end());
  const double med = ms[ms.size() / 2];
  const double wall_med = wall_ms[wall_ms.size() / 2];
  const double ips = static_cast<double>(opt.batch) / (med * 1e-3);
  const double tflops = 3.0 * 2.0 * macs * static_cast<double>(opt.batch) / (med * 1e-3) / 1e12;
  const double peak_tflops = rz::bench::nominal_bf16_tflops(prop);
  const double mfu = peak_tflops > 0 ? tflops / peak_tflops : 0.0;
  const double gib = 1024.0 * 1024.0 * 1024.0;

  std::printf(
      "step: median %.2f ms (min %.2f, max %.2f; host wall median %.2f ms) = %.2f images/s\n", med,
      ms.front(), ms.back(), wall_med, ips);
  std::printf(
      "memory: peak %.2f GiB during the timed steps (default pool %.2f GiB + CUDA graph memory "
      "%.2f GiB; %.2f GiB held between steps: weights, optimizer state, input), device total "
      "%.1f GiB\n",
      static_cast<double>(peak_bytes) / gib, static_cast<double>(pool_peak) / gib,
      static_cast<double>(graph_peak) / gib, static_cast<double>(steady_bytes) / gib,
      static_cast<double>(prop.totalGlobalMem) / gib);
  if (peak_tflops > 0)
    std::printf(
        "compute: %.1f TFLOP/s (3 x 2 x %.2f GMAC x %lld images / step), MFU %.2f%% of %.0f "
        "TFLOP/s dense bf16\n",
        tflops, macs / 1e9, static_cast<long long>(opt.batch), 100.0 * mfu, peak_tflops);
  else
    std::printf(
        "compute: %.1f TFLOP/s (3 x 2 x %.2f GMAC x %lld images / step); MFU n/a (no "
        "nominal peak known for this GPU)\n",
        tflops, macs / 1e9, static_cast<long long>(opt.batch));
  std::printf("final loss %.6f\n", final_loss);
  // One grep-able line for scripts/gpu_check.sh.
  std::printf(
      "train_step_bench result: %s %lldpx batch %lld %s %s: images/s=%.2f ms/step=%.2f "
      "peak_mem_gib=%.2f tflops=%.1f mfu=%.2f%%\n",
      opt.model.c_str(), static_cast<long long>(opt.img_size), static_cast<long long>(opt.batch),
      opt.precision.c_str(), opt.optim.c_str(), ips, med, static_cast<double>(peak_bytes) / gib,
      tflops, 100.0 * mfu);

  nlohmann::json j = config_json(opt);
  j["bench"] = "train_step_bench";
  j["engine"] = "ranzcr";
  j["device"] = device;
  j["ms_per_step"] = med;
  j["ms_per_step_min"] = ms.front();
  j["ms_per_step_max"] = ms.back();
  j["host_wall_ms_per_step"] = wall_med;
  j["images_per_s"] = ips;
  j["warmup_ms"] = warm_ms;
  j["peak_mem_bytes"] = peak_bytes;
  j["steady_mem_bytes"] = steady_bytes;
  j["fwd_gmac_per_image"] = macs / 1e9;
  j["tflops"] = tflops;
  j["nominal_bf16_tflops"] = peak_tflops;
  j["mfu"] = mfu;
  j["final_loss"] = final_loss;
  if (!opt.pytorch_json.empty())
    j["pytorch"] =
        compare_with_pytorch(opt.pytorch_json, opt, ips, static_cast<double>(peak_bytes));
  write_json(opt.json, j);
  return 0;
}

#endif  // RZ_HAVE_CUDA

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--model")
        opt.model = next();
      else if (a == "--img-size")
        opt.img_size = std::stoll(next());
      else if (a == "--batch")
        opt.batch = std::stoll(next());
      else if (a == "--steps")
        opt.steps = std::stoi(next());
      else if (a == "--warmup")
        opt.warmup = std::stoi(next());
      else if (a == "--precision")
        opt.precision = next();
      else if (a == "--optim")
        opt.optim = next();
      else if (a == "--tf32")
        opt.tf32 = true;
      else if (a == "--fused-se")
        opt.fused_se = true;
      else if (a == "--graph")
        opt.graph = true;
      else if (a == "--conv-impl")
        opt.conv_impl = next();
      else if (a == "--seed")
        opt.seed = std::stoull(next());
      else if (a == "--json")
        opt.json = next();
      else if (a == "--pytorch-json")
        opt.pytorch_json = next();
      else if (a == "--help" || a == "-h") {
        usage(stdout);
        return 0;
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
    if (opt.precision != "fp32" && opt.precision != "bf16")
      throw std::invalid_argument("--precision must be fp32 or bf16, got " + opt.precision);
    if (opt.optim != "sgd" && opt.optim != "adamw")
      throw std::invalid_argument("--optim must be sgd or adamw, got " + opt.optim);
    if (opt.batch < 1 || opt.img_size < 32 || opt.steps < 1 || opt.warmup < 0)
      throw std::invalid_argument(
          "need --batch >= 1, --img-size >= 32, --steps >= 1, --warmup >= 0");
    if (opt.graph && opt.warmup < 3)
      throw std::invalid_argument("--graph needs --warmup >= 3 (eager, eager in graph mode, capture)");
    if (opt.conv_impl != "cudnn" && opt.conv_impl != "native" && opt.conv_impl != "auto")
      throw std::invalid_argument("--conv-impl must be cudnn, native or auto, got " + opt.conv_impl);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step_bench: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  if (rz::bench::skip_without_gpu("train_step_bench")) return 0;
#if defined(RZ_HAVE_CUDA)
  try {
    return run(opt);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    nlohmann::json j = config_json(opt);
    j["bench"] = "train_step_bench";
    j["error"] = what;
    if (is_oom(what)) {
      j["oom"] = true;
      std::fprintf(
          stderr,
          "train_step_bench: out of GPU memory for %s %lldx%lld batch %lld %s (try a smaller "
          "--batch): %s\n",
          opt.model.c_str(), static_cast<long long>(opt.img_size),
          static_cast<long long>(opt.img_size), static_cast<long long>(opt.batch),
          opt.precision.c_str(), what.c_str());
    } else {
      std::fprintf(stderr, "train_step_bench: %s\n", what.c_str());
    }
    write_json(opt.json, j);
    return 1;
  }
#else
  return 0;
#endif
}
