// Per-op GPU benchmarks of the memory-bound CUDA kernels (kernels/cuda/*.cuh,
// called directly, no Tensor or autograd in the timed region) on the
// activation shapes of a training step of seresnet152d (default batch 32,
// 512x512), in fp32 and bf16:
//
//   elementwise   add, axpy, cast (f32->bf16 in the fp32 rows, bf16->f32 in the
//                 bf16 rows), sigmoid fwd/bwd on each stage output (layer1..4);
//                 relu fwd/bwd on the stem output (before the maxpool) and each
//                 stage output
//   SE            channel_scale fwd/bwd, global_avg_pool fwd/bwd on each stage output
//   batch norm    train fwd, train bwd, eval fwd on the stem and each stage output
//   pooling       max_pool 3x3/2 pad 1 fwd/bwd on the stem output (before the
//                 maxpool); avg_pool 2x2/2 ceil, no pad count fwd/bwd on the
//                 inputs of the avg_down shortcuts of layer2..layer4
//   losses        bce_with_logits on [B, 11] logits (fp32 targets, with the
//                 gradient); mse on the layer4 features (distillation; da only)
//   optimizers    sgd (momentum 0.9, weight decay) and adamw multi-tensor steps
//                 over the model's parameter sizes (fp32 master weights only),
//                 taken from create_resnet(...)->named_parameters() on the CPU
//
// Timing: rz::bench::time_gpu (3 warm-up runs, then --reps runs, each with the
// L2 flushed, cudaEvents on cudaStreamPerThread); the median is reported.
//
// Bytes are the COMPULSORY traffic of the op: every input element read once and
// every output element written once (an ideal single-pass kernel), with es the
// element size (4 fp32, 2 bf16) and n the elements of the activation:
//   add, axpy 3n*es; cast n*(4+2); relu/sigmoid fwd 2n*es, bwd 3n*es (y, dy, dx);
//   channel_scale fwd 2n*es + NC*es, bwd 3n*es + 2NC*es (x, dy, s; dx, ds);
//   global pool fwd/bwd n*es + NC*es; bn train fwd 2n*es, bn train bwd 3n*es
//   (x, dy; dx), bn eval fwd 2n*es (+ the fp32 C-vectors, read and written once);
//   max pool fwd in*es + out*(es + 4) (y and the int32 argmax), bwd
//   out*(es + 4) + in*es; avg pool fwd/bwd (in + out)*es; bce rows*L*(2es + 4);
//   mse 3n*es; sgd with momentum 5 fp32 words per parameter (p, g, buf read;
//   p, buf written), adamw 7 (p, g, m, v read; p, m, v written).
// Multi-pass ops cannot reach 100% by this count: a batch-norm training
// forward that does not keep x on chip reads it at least twice (statistics,
// then normalize; the v1 kernel reads it three times), the backward reads x and
// dy twice; the table's note column says so. GB/s = bytes / median time;
// "%HBM" = that / rz::bench::measured_hbm_gbps (a device-to-device copy on this
// very GPU), so 100% is what the memory system delivers to a copy.
//
//   ops_gpu_bench                                   # all ops, seresnet152d, B 32, 512x512
//   ops_gpu_bench --filter bn_ --reps 50            # only ops whose "op dtype site" contains bn_
//   ops_gpu_bench --batch 8 --img-size 256 --json ops.jsonl
//
// --json FILE writes one JSON object per row (JSON lines). Without a usable
// CUDA device (or in a build without CUDA) it prints one line and exits 0.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/gpu_bench.h"
#include "engine/error.h"
#include "models/seresnet.h"

#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#include "kernels/common/bf16.h"
#include "kernels/cpu/pool.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/channel_scale.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/loss.cuh"
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/pool.cuh"
#endif

namespace {

struct Options {
  std::string model = "seresnet152d";
  int64_t batch = 32;
  int64_t img_size = 512;
  int64_t num_classes = 11;
  int reps = 20;
  std::string filter;  // substring of "op dtype site"; empty: everything
  std::string json;    // JSON-lines output file; empty: none
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ops_gpu_bench [--model NAME] [--batch B] [--img-size S] [--reps N]\n"
               "                     [--filter SUBSTRING] [--json FILE]\n"
               "  defaults: --model seresnet152d --batch 32 --img-size 512 --reps 20\n"
               "  --filter keeps the rows whose \"op dtype site\" contains SUBSTRING\n");
}

#if defined(RZ_HAVE_CUDA)

using rz::bf16;

// A plain cudaMalloc'ed device buffer (the timed launchers take raw pointers).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) RZ_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
const char* dtype_name();
template <>
const char* dtype_name<float>() {
  return "f32";
}
template <>
const char* dtype_name<bf16>() {
  return "bf16";
}

// Fills n elements of `dst` with values uniform in [lo, hi): a host tile of
// random fp32 values (a length coprime to the channel counts, so channels do
// not all see the same values) is uploaded once and doubled in place by
// device-to-device copies, then cast to T on the device. Values only need to
// be ordinary numbers (no NaN, no denormals) for the timings to be typical.
template <typename T>
void fill_uniform(T* dst, int64_t n, float lo, float hi, uint64_t seed, cudaStream_t stream) {
  if (n <= 0) return;
  DeviceBuffer tmp;
  float* f = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    f = dst;
  } else {
    tmp = DeviceBuffer(static_cast<size_t>(n) * sizeof(float));
    f = tmp.as<float>();
  }
  const int64_t tile = std::min<int64_t>(n, (int64_t{1} << 20) + 7);
  std::vector<float> host(static_cast<size_t>(tile));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (auto& v : host) v = dist(rng);
  RZ_CUDA_CHECK(
      cudaMemcpyAsync(f, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
  for (int64_t done = tile; done < n;) {
    const int64_t len = std::min(done, n - done);
    RZ_CUDA_CHECK(cudaMemcpyAsync(f + done, f, static_cast<size_t>(len) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, stream));
    done += len;
  }
  if constexpr (!std::is_same_v<T, float>) {
    RZ_CUDA_CHECK((rz::cast_cuda<float, T>(f, dst, n, stream)));
  }
  RZ_CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` and `tmp` die here
}

// An activation shape of the model: [N, H, W, C] NHWC.
struct Site {
  std::string name;  // "stem", "layer1".."layer4"
  int64_t N, H, W, C;
  int64_t numel() const { return N * H * W * C; }
  std::string shape() const {
    return std::to_string(N) + "x" + std::to_string(H) + "x" + std::to_string(W) + "x" +
           std::to_string(C);
  }
};

// The sites of `cfg` at `size`: the stem output before the maxpool, then the
// output of each stage (from rz::resnet_cost, the analytic shape model).
std::vector<Site> model_sites(const rz::ResNetConfig& cfg, int64_t batch, int64_t size) {
  std::vector<Site> sites;
  // Deep stem: 3x3/2 pad 1; plain: 7x7/2 pad 3. Both give (S - 1) / 2 + 1.
  const int64_t stem_hw = (size - 1) / 2 + 1;
  sites.push_back({"stem", batch, stem_hw, stem_hw, cfg.deep_stem ? 2 * cfg.stem_width : 64});
  for (const rz::StageCost& s : rz::resnet_cost(cfg, size)) {
    if (s.name.rfind("layer", 0) == 0) sites.push_back({s.name, batch, s.out_h, s.out_w, s.out_c});
  }
  return sites;
}

struct Row {
  std::string op, dtype, site, shape, note;
  double bytes = 0;
  rz::bench::GpuTiming t;
};

class Bench {
 public:
  Bench(const Options& opt, double hbm_gbps, std::string device)
      : opt_(opt), hbm_gbps_(hbm_gbps), device_(std::move(device)) {
    if (!opt.json.empty()) {
      json_.open(opt.json);
      RZ_CHECK(json_.good(), "ops_gpu_bench: cannot write ", opt.json);
    }
    std::printf("%-18s %-5s %-7s %-22s %9s %9s %9s %8s %6s  %s\n", "op", "dtype", "site", "shape",
                "MB", "median_ms", "min_ms", "GB/s", "%HBM", "note");
  }

  bool wanted(const std::string& op, const char* dtype, const std::string& site) const {
    if (opt_.filter.empty()) return true;
    return (op + " " + dtype + " " + site).find(opt_.filter) != std::string::npos;
  }

  // Times `launch` (which enqueues on stream()) and prints/records one row.
  void run(const std::string& op, const char* dtype, const std::string& site,
           const std::string& shape, double bytes, const std::function<void()>& launch,
           const std::string& note = "") {
    if (!wanted(op, dtype, site)) return;
    Row r{op, dtype, site, shape, note, bytes, {}};
    r.t = rz::bench::time_gpu(stream(), launch, 3, opt_.reps, true);
    const double gbps = r.t.median_ms > 0 ? bytes / (r.t.median_ms * 1e6) : 0.0;
    const double frac = hbm_gbps_ > 0 ? gbps / hbm_gbps_ : 0.0;
    std::printf("%-18s %-5s %-7s %-22s %9.1f %9.4f %9.4f %8.0f %5.1f%%  %s\n", op.c_str(), dtype,
                site.c_str(), shape.c_str(), bytes / 1e6, r.t.median_ms, r.t.min_ms, gbps,
                100.0 * frac, note.c_str());
    std::fflush(stdout);
    if (json_.is_open()) {
      nlohmann::json j = {{"bench", "ops_gpu_bench"},
                          {"device", device_},
                          {"model", opt_.model},
                          {"batch", opt_.batch},
                          {"img_size", opt_.img_size},
                          {"op", op},
                          {"dtype", dtype},
                          {"site", site},
                          {"shape", shape},
                          {"bytes", bytes},
                          {"median_ms", r.t.median_ms},
                          {"min_ms", r.t.min_ms},
                          {"max_ms", r.t.max_ms},
                          {"runs", r.t.runs},
                          {"gbps", gbps},
                          {"hbm_gbps", hbm_gbps_},
                          {"hbm_fraction", frac},
                          {"note", note}};
      json_ << j.dump() << "\n";
      json_.flush();
    }
    rows_.push_back(std::move(r));
  }

  static cudaStream_t stream() { return cudaStreamPerThread; }
  const Options& opt() const { return opt_; }
  size_t rows() const { return rows_.size(); }

  // One line for scripts/gpu_check.sh: the median %HBM per dtype and the three
  // rows furthest from the copy bandwidth among those moving >= 16 MB (smaller
  // ones are dominated by launch latency, not by the kernel's memory access).
  void print_summary() const {
    std::string line = "ops_gpu_bench summary: " + std::to_string(rows_.size()) + " rows";
    char buf[160];
    for (const char* dt : {"f32", "bf16"}) {
      std::vector<double> fr;
      for (const Row& r : rows_)
        if (r.dtype == dt) fr.push_back(fraction(r));
      if (fr.empty()) continue;
      std::sort(fr.begin(), fr.end());
      std::snprintf(buf, sizeof buf, "; median %%HBM %s %.1f%%", dt, 100.0 * fr[fr.size() / 2]);
      line += buf;
    }
    std::vector<const Row*> big;
    for (const Row& r : rows_)
      if (r.bytes >= 16e6) big.push_back(&r);
    std::sort(big.begin(), big.end(),
              [this](const Row* a, const Row* c) { return fraction(*a) < fraction(*c); });
    if (!big.empty()) line += "; lowest (>= 16 MB moved):";
    for (size_t i = 0; i < big.size() && i < 3; ++i) {
      std::snprintf(buf, sizeof buf, "%s %s %s %s %.1f%%", i == 0 ? "" : ",", big[i]->op.c_str(),
                    big[i]->dtype.c_str(), big[i]->site.c_str(), 100.0 * fraction(*big[i]));
      line += buf;
    }
    std::printf("%s\n", line.c_str());
  }

 private:
  Options opt_;
  double hbm_gbps_;
  std::string device_;
  std::ofstream json_;
  std::vector<Row> rows_;

  double fraction(const Row& r) const {
    return r.t.median_ms > 0 && hbm_gbps_ > 0 ? r.bytes / (r.t.median_ms * 1e6) / hbm_gbps_ : 0.0;
  }
};

// Every activation op of one dtype. Buffers are sized for the largest site and
// each site uses their prefix, so they are allocated and filled once per dtype.
template <typename T>
void bench_activation_ops(Bench& b, const std::vector<Site>& sites, const rz::ResNetConfig& cfg) {
  const char* dt = dtype_name<T>();
  const cudaStream_t st = Bench::stream();
  const double es = static_cast<double>(sizeof(T));
  int64_t max_n = 0, max_nc = 0, max_c = 0;
  for (const Site& s : sites) {
    max_n = std::max(max_n, s.numel());
    max_nc = std::max(max_nc, s.N * s.C);
    max_c = std::max(max_c, s.C);
  }
  const auto elems = [](int64_t n) { return static_cast<size_t>(n); };
  DeviceBuffer x(elems(max_n) * sizeof(T)), y(elems(max_n) * sizeof(T)),
      dy(elems(max_n) * sizeof(T)), dx(elems(max_n) * sizeof(T)), s_vec(elems(max_nc) * sizeof(T)),
      ds(elems(max_nc) * sizeof(T));
  using Other = std::conditional_t<std::is_same_v<T, float>, bf16, float>;  // the cast target
  DeviceBuffer other(elems(max_n) * sizeof(Other));
  DeviceBuffer gamma(elems(max_c) * 4), beta(elems(max_c) * 4), mean(elems(max_c) * 4),
      invstd(elems(max_c) * 4), rmean(elems(max_c) * 4), rvar(elems(max_c) * 4),
      dgamma(elems(max_c) * 4), dbeta(elems(max_c) * 4);
  fill_uniform<T>(x.as<T>(), max_n, -2.f, 2.f, 1, st);
  fill_uniform<T>(y.as<T>(), max_n, -2.f, 2.f, 2, st);
  fill_uniform<T>(dy.as<T>(), max_n, -1.f, 1.f, 3, st);
  fill_uniform<T>(s_vec.as<T>(), max_nc, 0.f, 1.f, 4, st);  // sigmoid outputs
  fill_uniform<float>(gamma.as<float>(), max_c, 0.5f, 1.5f, 5, st);
  fill_uniform<float>(beta.as<float>(), max_c, -0.5f, 0.5f, 6, st);
  fill_uniform<float>(rmean.as<float>(), max_c, -0.1f, 0.1f, 7, st);
  fill_uniform<float>(rvar.as<float>(), max_c, 0.5f, 1.5f, 8, st);

  T* px = x.as<T>();
  T* py = y.as<T>();
  T* pdy = dy.as<T>();
  T* pdx = dx.as<T>();
  T* ps = s_vec.as<T>();
  T* pds = ds.as<T>();
  const char* kBnFwdNote = "multi-pass: stats then normalize read x >= 2x";
  const char* kBnBwdNote = "multi-pass: sums then dx read x, dy >= 2x";

  for (const Site& s : sites) {
    // The stem output (before the maxpool) goes through BN and ReLU only: no
    // residual add, no SE there.
    const bool stem = s.name == "stem";
    const int64_t n = s.numel(), nc = s.N * s.C, M = s.N * s.H * s.W, C = s.C, HW = s.H * s.W;
    const double dn = static_cast<double>(n), dnc = static_cast<double>(nc);
    const double dc = static_cast<double>(C);
    const std::string sh = s.shape();
    if (!stem) {
      b.run("add", dt, s.name, sh, 3 * dn * es,
            [&] { RZ_CUDA_CHECK(rz::add_cuda<T>(px, pdy, py, n, st)); });
      b.run("axpy", dt, s.name, sh, 3 * dn * es,
            [&] { RZ_CUDA_CHECK(rz::axpy_cuda<T>(1e-3, pdy, py, n, st)); });
      b.run(std::is_same_v<T, float> ? "cast_to_bf16" : "cast_to_f32", dt, s.name, sh,
            dn * (es + static_cast<double>(sizeof(Other))),
            [&] { RZ_CUDA_CHECK((rz::cast_cuda<T, Other>(px, other.as<Other>(), n, st))); });
    }
    b.run("relu_fwd", dt, s.name, sh, 2 * dn * es,
          [&] { RZ_CUDA_CHECK(rz::relu_fwd_cuda<T>(px, py, n, st)); });
    b.run("relu_bwd", dt, s.name, sh, 3 * dn * es,
          [&] { RZ_CUDA_CHECK(rz::relu_bwd_cuda<T>(px, pdy, pdx, n, st)); });
    if (!stem) {
      b.run("sigmoid_fwd", dt, s.name, sh, 2 * dn * es,
            [&] { RZ_CUDA_CHECK(rz::sigmoid_fwd_cuda<T>(px, py, n, st)); });
      b.run("sigmoid_bwd", dt, s.name, sh, 3 * dn * es,
            [&] { RZ_CUDA_CHECK(rz::sigmoid_bwd_cuda<T>(px, pdy, pdx, n, st)); });
      b.run("chscale_fwd", dt, s.name, sh, (2 * dn + dnc) * es,
            [&] { RZ_CUDA_CHECK(rz::channel_scale_fwd_cuda<T>(px, ps, py, s.N, HW, C, st)); });
      b.run("chscale_bwd", dt, s.name, sh, (3 * dn + 2 * dnc) * es, [&] {
        RZ_CUDA_CHECK(rz::channel_scale_bwd_cuda<T>(px, ps, pdy, pdx, pds, s.N, HW, C, st));
      });
      b.run("gpool_fwd", dt, s.name, sh, (dn + dnc) * es,
            [&] { RZ_CUDA_CHECK(rz::global_avg_pool_fwd_cuda<T>(px, pds, s.N, HW, C, st)); });
      b.run("gpool_bwd", dt, s.name, sh, (dn + dnc) * es,
            [&] { RZ_CUDA_CHECK(rz::global_avg_pool_bwd_cuda<T>(ps, pdx, s.N, HW, C, st)); });
    }
    // C-vectors: gamma, beta read; save_mean, save_invstd written; running
    // mean/var read and written.
    b.run(
        "bn_train_fwd", dt, s.name, sh, 2 * dn * es + 8 * dc * 4,
        [&] {
          RZ_CUDA_CHECK(rz::batch_norm_fwd_train_cuda<T>(
              px, gamma.as<float>(), beta.as<float>(), py, mean.as<float>(), invstd.as<float>(),
              rmean.as<float>(), rvar.as<float>(), M, C, 0.1, 1e-5, st));
        },
        kBnFwdNote);
    if (!b.wanted("bn_train_fwd", dt, s.name) && b.wanted("bn_train_bwd", dt, s.name)) {
      // The backward needs the forward's saved statistics.
      RZ_CUDA_CHECK(rz::batch_norm_fwd_train_cuda<T>(px, gamma.as<float>(), beta.as<float>(), py,
                                                     mean.as<float>(), invstd.as<float>(), nullptr,
                                                     nullptr, M, C, 0.1, 1e-5, st));
    }
    // gamma, mean, invstd read; dgamma, dbeta written.
    b.run(
        "bn_train_bwd", dt, s.name, sh, 3 * dn * es + 5 * dc * 4,
        [&] {
          RZ_CUDA_CHECK(rz::batch_norm_bwd_cuda<T>(px, pdy, gamma.as<float>(), mean.as<float>(),
                                                   invstd.as<float>(), pdx, dgamma.as<float>(),
                                                   dbeta.as<float>(), M, C, true, st));
        },
        kBnBwdNote);
    b.run("bn_eval_fwd", dt, s.name, sh, 2 * dn * es + 4 * dc * 4, [&] {
      RZ_CUDA_CHECK(rz::batch_norm_fwd_eval_cuda<T>(px, gamma.as<float>(), beta.as<float>(),
                                                    rmean.as<float>(), rvar.as<float>(), py, M, C,
                                                    1e-5, st));
    });
  }

  // Max pool 3x3/2 pad 1 on the stem output.
  {
    const Site& s = sites.front();
    const rz::Pool2dGeom g = rz::make_pool2d_geom(s.N, s.H, s.W, s.C, 3, 3, 2, 2, 1, 1, false);
    const int64_t in = s.numel(), out = g.N * g.OH * g.OW * g.C;
    const double din = static_cast<double>(in), dout = static_cast<double>(out);
    DeviceBuffer argmax(static_cast<size_t>(out) * sizeof(int32_t));
    const std::string sh = s.shape();
    b.run("maxpool_fwd", dt, s.name, sh, din * es + dout * (es + 4),
          [&] { RZ_CUDA_CHECK(rz::max_pool2d_fwd_cuda<T>(px, py, argmax.as<int32_t>(), g, st)); });
    if (!b.wanted("maxpool_fwd", dt, s.name) && b.wanted("maxpool_bwd", dt, s.name))
      RZ_CUDA_CHECK(rz::max_pool2d_fwd_cuda<T>(px, py, argmax.as<int32_t>(), g, st));
    b.run("maxpool_bwd", dt, s.name, sh, dout * (es + 4) + din * es, [&] {
      RZ_CUDA_CHECK(rz::max_pool2d_bwd_cuda<T>(pdy, argmax.as<int32_t>(), pdx, g, st));
    });
  }

  // Average pool 2x2/2, ceil mode, no pad count: the avg_down shortcut of the
  // first block of layer2..layer4, whose input is the previous stage's output.
  for (size_t i = 2; i < sites.size(); ++i) {
    const Site& s = sites[i - 1];
    const rz::Pool2dGeom g = rz::make_pool2d_geom(s.N, s.H, s.W, s.C, 2, 2, 2, 2, 0, 0, true);
    const double din = static_cast<double>(s.numel());
    const double dout = static_cast<double>(g.N * g.OH * g.OW * g.C);
    const std::string site = sites[i].name;  // the stage whose shortcut this is
    const std::string sh = s.shape();
    const char* note = cfg.avg_down ? "" : "(this model has no avg_down shortcut)";
    b.run(
        "avgpool_fwd", dt, site, sh, (din + dout) * es,
        [&] { RZ_CUDA_CHECK(rz::avg_pool2d_fwd_cuda<T>(px, py, g, false, st)); }, note);
    b.run(
        "avgpool_bwd", dt, site, sh, (din + dout) * es,
        [&] { RZ_CUDA_CHECK(rz::avg_pool2d_bwd_cuda<T>(pdy, pdx, g, false, st)); }, note);
  }

  // Losses: BCE on the logits (with the gradient), feature MSE on layer4.
  {
    const int64_t rows = sites.front().N, L = b.opt().num_classes;
    DeviceBuffer targets(static_cast<size_t>(rows * L) * 4), loss(4);
    fill_uniform<float>(targets.as<float>(), rows * L, 0.f, 1.f, 9, st);
    const std::string sh = std::to_string(rows) + "x" + std::to_string(L);
    b.run("bce_with_logits", dt, "head", sh, static_cast<double>(rows * L) * (2 * es + 4) + 4, [&] {
      RZ_CUDA_CHECK(rz::bce_with_logits_cuda<T>(px, targets.as<float>(), nullptr, pdx, 1.f,
                                                loss.as<float>(), rows, L, st));
    });
    const Site& s = sites.back();
    const int64_t n = s.numel();
    b.run("mse", dt, s.name, s.shape(), 3 * static_cast<double>(n) * es + 4, [&] {
      RZ_CUDA_CHECK(rz::mse_cuda<T>(px, py, pdx, nullptr, 1.f, loss.as<float>(), n, st));
    });
  }
  RZ_CUDA_CHECK(cudaStreamSynchronize(st));
}

// Multi-tensor SGD and AdamW over the model's parameter sizes: one flat fp32
// buffer per role (parameters, gradients, first and second state), every
// tensor starting on a 256-byte boundary, and the device arrays of a
// rz::TensorList pointing into them.
void bench_optimizers(Bench& b, const rz::ResNetConfig& cfg) {
  if (!b.wanted("sgd_step", "f32", "params") && !b.wanted("adamw_step", "f32", "params")) return;
  const cudaStream_t st = Bench::stream();
  std::vector<int64_t> sizes;
  {
    auto model = rz::create_resnet(cfg, 0);  // CPU, only for the parameter sizes
    for (const auto& [name, t] : model->named_parameters()) sizes.push_back(t.numel());
  }
  const int count = static_cast<int>(sizes.size());
  std::vector<int64_t> offsets(sizes.size());
  int64_t total = 0, padded = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    offsets[i] = padded;
    padded += (sizes[i] + 63) / 64 * 64;
    total += sizes[i];
  }
  const size_t bytes = static_cast<size_t>(padded) * sizeof(float);
  DeviceBuffer p(bytes), g(bytes), s1(bytes), s2(bytes);
  fill_uniform<float>(p.as<float>(), padded, -0.1f, 0.1f, 11, st);
  fill_uniform<float>(g.as<float>(), padded, -1e-2f, 1e-2f, 12, st);
  RZ_CUDA_CHECK(cudaMemsetAsync(s1.as<float>(), 0, bytes, st));
  RZ_CUDA_CHECK(cudaMemsetAsync(s2.as<float>(), 0, bytes, st));

  std::vector<float*> hp(sizes.size()), hs1(sizes.size()), hs2(sizes.size());
  std::vector<const float*> hg(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    hp[i] = p.as<float>() + offsets[i];
    hg[i] = g.as<float>() + offsets[i];
    hs1[i] = s1.as<float>() + offsets[i];
    hs2[i] = s2.as<float>() + offsets[i];
  }
  std::vector<int64_t> chunk_offsets(sizes.size() + 1);
  const int64_t total_chunks =
      rz::multi_tensor_chunk_offsets(sizes.data(), count, chunk_offsets.data());
  const size_t ptr_bytes = sizes.size() * sizeof(float*);
  DeviceBuffer dp(ptr_bytes), dg(ptr_bytes), ds1(ptr_bytes), ds2(ptr_bytes),
      dsizes(sizes.size() * sizeof(int64_t)), dchunks(chunk_offsets.size() * sizeof(int64_t));
  RZ_CUDA_CHECK(cudaMemcpy(dp.as<void>(), hp.data(), ptr_bytes, cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(cudaMemcpy(dg.as<void>(), hg.data(), ptr_bytes, cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(cudaMemcpy(ds1.as<void>(), hs1.data(), ptr_bytes, cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(cudaMemcpy(ds2.as<void>(), hs2.data(), ptr_bytes, cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(
      cudaMemcpy(dsizes.as<void>(), sizes.data(), dsizes.bytes(), cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(cudaMemcpy(dchunks.as<void>(), chunk_offsets.data(), dchunks.bytes(),
                           cudaMemcpyHostToDevice));
  RZ_CUDA_CHECK(cudaStreamSynchronize(st));  // the fills ran on `st`, the copies are synchronous

  rz::TensorList list;
  list.params = dp.as<float*>();
  list.grads = dg.as<const float*>();
  list.state1 = ds1.as<float*>();
  list.state2 = ds2.as<float*>();
  list.sizes = dsizes.as<int64_t>();
  list.chunk_offsets = dchunks.as<int64_t>();
  list.count = count;
  list.total_chunks = total_chunks;

  char shape[64];
  std::snprintf(shape, sizeof shape, "%d tensors, %.2fM", count, static_cast<double>(total) / 1e6);
  const double dtotal = static_cast<double>(total);
  rz::SgdHyper sgd;
  sgd.lr = 0.01;
  sgd.momentum = 0.9;
  sgd.weight_decay = 1e-4;
  b.run(
      "sgd_step", "f32", "params", shape, 5 * dtotal * 4,
      [&] { RZ_CUDA_CHECK(rz::sgd_step_multi_cuda(list, sgd, false, st)); }, "momentum 0.9");
  rz::AdamHyper adam;
  adam.lr = 1e-3;
  adam.weight_decay = 0.01;
  adam.decoupled = true;
  b.run("adamw_step", "f32", "params", shape, 7 * dtotal * 4,
        [&] { RZ_CUDA_CHECK(rz::adam_step_multi_cuda(list, adam, 10, st)); });
  RZ_CUDA_CHECK(cudaStreamSynchronize(st));
}

int run(const Options& opt) {
  rz::ResNetConfig cfg = rz::resnet_config(opt.model);
  cfg.num_classes = opt.num_classes;
  RZ_CUDA_CHECK(cudaSetDevice(0));
  const std::string device = rz::bench::device_line(0);
  const double hbm = rz::bench::measured_hbm_gbps(cudaStreamPerThread);
  std::printf("ops_gpu_bench: %s\n", device.c_str());
  std::printf(
      "model %s, batch %lld, %lldx%lld; measured HBM (D2D copy) %.0f GB/s; median of %d "
      "runs after 3 warm-up, L2 flushed; bytes = compulsory traffic (see the source)\n",
      opt.model.c_str(), static_cast<long long>(opt.batch), static_cast<long long>(opt.img_size),
      static_cast<long long>(opt.img_size), hbm, opt.reps);
  const std::vector<Site> sites = model_sites(cfg, opt.batch, opt.img_size);
  Bench b(opt, hbm, device);
  bench_activation_ops<float>(b, sites, cfg);
  bench_activation_ops<bf16>(b, sites, cfg);
  bench_optimizers(b, cfg);
  b.print_summary();
  if (!opt.json.empty()) std::printf("ops_gpu_bench: JSON lines in %s\n", opt.json.c_str());
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
      else if (a == "--batch")
        opt.batch = std::stoll(next());
      else if (a == "--img-size")
        opt.img_size = std::stoll(next());
      else if (a == "--reps")
        opt.reps = std::max(1, std::stoi(next()));
      else if (a == "--filter")
        opt.filter = next();
      else if (a == "--json")
        opt.json = next();
      else if (a == "--help" || a == "-h") {
        usage(stdout);
        return 0;
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
    if (opt.batch < 1 || opt.img_size < 32)
      throw std::invalid_argument("need --batch >= 1 and --img-size >= 32");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ops_gpu_bench: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  if (rz::bench::skip_without_gpu("ops_gpu_bench")) return 0;
#if defined(RZ_HAVE_CUDA)
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ops_gpu_bench: %s\n", e.what());
    return 1;
  }
#else
  return 0;
#endif
}
