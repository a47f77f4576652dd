// CudaContext, and the cuBLAS GEMM and cuDNN convolution wrappers against
// their CPU twins (gemm_cpu, conv2d_*_cpu in double), on odd shapes, with
// sentinel guards around every output to catch out-of-bounds writes.
#include "tests/gpu/gpu_test.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "engine/cuda_context.h"
#include "engine/cuda_conv.h"
#include "engine/cuda_gemm.h"
#include "engine/error.h"
#include "engine/storage.h"
#include "engine/tensor.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"

using namespace rz;

// Runs everywhere: a context for a device that is not there (device 0 without
// a usable GPU, one past the last device with one) cannot be made, and says so.
TEST_CASE("cuda context: construction for a missing device throws rz::Error") {
  const int missing = cuda_device_count();
  CHECK_THROWS_AS((void)CudaContext(missing), Error);
  NvtxRange range("no-op without a GPU");  // must not throw
}

#if defined(RZ_HAVE_CUDA)
namespace {

constexpr size_t kGuardBytes = 256;  // sentinel on each side of an output

// A device buffer; outputs get 0xA5 sentinels on both sides.
class DevBuf {
 public:
  explicit DevBuf(size_t bytes) : bytes_(bytes) {
    RZ_CUDA_CHECK(cudaMalloc(&base_, bytes + 2 * kGuardBytes));
    RZ_CUDA_CHECK(cudaMemset(base_, 0xA5, bytes + 2 * kGuardBytes));
  }
  template <typename T> explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size() * sizeof(T)) {
    RZ_CUDA_CHECK(cudaMemcpy(ptr(), host.data(), bytes_, cudaMemcpyHostToDevice));
  }
  ~DevBuf() { cudaFree(base_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  void* ptr() const { return static_cast<unsigned char*>(base_) + kGuardBytes; }
  template <typename T> std::vector<T> get() const {
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> out(bytes_ / sizeof(T));
    RZ_CUDA_CHECK(cudaMemcpy(out.data(), ptr(), bytes_, cudaMemcpyDeviceToHost));
    return out;
  }
  bool guards_intact() const {
    std::vector<unsigned char> all(bytes_ + 2 * kGuardBytes);
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    RZ_CUDA_CHECK(cudaMemcpy(all.data(), base_, all.size(), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < kGuardBytes; ++i)
      if (all[i] != 0xA5 || all[all.size() - 1 - i] != 0xA5) return false;
    return true;
  }

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = f32_to_bf16(v[i]);
  return o;
}
std::vector<double> to_f64(const std::vector<bf16>& v) {
  std::vector<double> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_f32(v[i]);
  return o;
}
template <typename T> std::vector<double> to_f64(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}
std::vector<double> abs_of(std::vector<double> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

// Every element within rtol of its error scale `bound` (sum of |terms|), the
// standard floating-point bound for a dot product; returns the failures.
int64_t count_outside(const std::vector<double>& got, const std::vector<double>& ref,
                      const std::vector<double>& bound, double rtol) {
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::fabs(got[i] - ref[i]) <= rtol * bound[i] + 1e-30)) ++bad;
  return bad;
}

// sum (got - ref)^2 / sum ref^2
double nmse(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

struct GemmShape {
  int64_t M, N, K;
};
const GemmShape kGemmShapes[] = {{1, 1, 1},    {7, 5, 3},     {33, 17, 65},
                                 {128, 96, 200}, {129, 1, 257}, {1, 300, 17}};

struct ConvShape {
  int64_t N, H, W, C, K, R, S, sh, sw, ph, pw;
};
const ConvShape kConvShapes[] = {
    {2, 8, 8, 16, 32, 1, 1, 1, 1, 0, 0},    // 1x1 (pointwise)
    {3, 10, 10, 8, 4, 1, 1, 2, 2, 0, 0},    // 1x1 stride 2 (downsample)
    {1, 9, 7, 5, 6, 3, 3, 1, 1, 1, 1},      // 3x3 s1, odd H/W/C, batch 1
    {2, 11, 13, 7, 9, 3, 3, 2, 2, 1, 1},    // 3x3 s2, odd everything
    {2, 16, 16, 32, 16, 3, 3, 1, 1, 1, 1},  // 3x3 s1, aligned channels
    {1, 23, 19, 3, 8, 7, 7, 2, 2, 3, 3},    // 7x7 s2 p3, C = 3 (a stem)
    {1, 5, 5, 1, 1, 3, 3, 1, 1, 0, 0},      // smallest: one channel in and out
};

Conv2dGeom geom_of(const ConvShape& s) {
  return make_conv2d_geom(s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
}

// CPU references in double on the given (already rounded) inputs, and the
// error scales from the same convolution on absolute values.
struct ConvRef {
  std::vector<double> y, dx, dw, y_bound, dx_bound, dw_bound;
};
ConvRef conv_reference(const Conv2dGeom& g, const std::vector<double>& x,
                       const std::vector<double>& w, const std::vector<double>& dy) {
  ConvRef r;
  r.y.resize(static_cast<size_t>(g.N * g.OH * g.OW * g.K));
  r.dx.resize(x.size());
  r.dw.resize(w.size());
  r.y_bound.resize(r.y.size());
  r.dx_bound.resize(r.dx.size());
  r.dw_bound.resize(r.dw.size());
  conv2d_fwd_cpu(x.data(), w.data(), r.y.data(), g);
  conv2d_bwd_data_cpu(dy.data(), w.data(), r.dx.data(), g);
  conv2d_bwd_weight_cpu(x.data(), dy.data(), r.dw.data(), g);
  const auto ax = abs_of(x), aw = abs_of(w), ady = abs_of(dy);
  conv2d_fwd_cpu(ax.data(), aw.data(), r.y_bound.data(), g);
  conv2d_bwd_data_cpu(ady.data(), aw.data(), r.dx_bound.data(), g);
  conv2d_bwd_weight_cpu(ax.data(), ady.data(), r.dw_bound.data(), g);
  return r;
}

}  // namespace
#endif

TEST_SUITE("gpu") {
#if defined(RZ_HAVE_CUDA)
TEST_CASE("gpu: CudaContext creates its stream, handles, workspace and properties") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx(0, "rz.test");
  const CudaDeviceProps& p = ctx.props();
  MESSAGE("device: ", p.str());
  CHECK(!p.name.empty());
  CHECK(p.sm_count > 0);
  CHECK(p.cc_major >= 7);
  CHECK(p.total_memory_bytes > (size_t{1} << 30));
  CHECK(ctx.device() == 0);
  REQUIRE(ctx.stream() != nullptr);
  CHECK(ctx.cublas() != nullptr);
  CHECK(ctx.cublaslt() != nullptr);
  CHECK(ctx.cudnn() != nullptr);

  unsigned flags = 0;
  RZ_CUDA_CHECK(cudaStreamGetFlags(ctx.stream(), &flags));
  CHECK(flags == cudaStreamNonBlocking);
  cudaStream_t s = nullptr;
  RZ_CUBLAS_CHECK(cublasGetStream(ctx.cublas(), &s));
  CHECK(s == ctx.stream());
  RZ_CUDNN_CHECK(cudnnGetStream(ctx.cudnn(), &s));
  CHECK(s == ctx.stream());

  // Grow-only workspace, rounded up; smaller requests reuse the buffer.
  void* w1 = ctx.workspace(1000);
  CHECK(w1 != nullptr);
  CHECK(ctx.workspace_bytes() >= 1000);
  CHECK(ctx.workspace(10) == w1);
  const size_t before = ctx.workspace_bytes();
  void* w2 = ctx.workspace(before + 1);
  CHECK(w2 != nullptr);
  CHECK(ctx.workspace_bytes() > before);
  RZ_CUDA_CHECK(cudaMemsetAsync(w2, 0, ctx.workspace_bytes(), ctx.stream()));
  {
    NvtxRange range("test range");
    ctx.synchronize();
  }
  CHECK_NOTHROW(profile_start());
  CHECK_NOTHROW(profile_stop());
  CHECK_THROWS_AS(CudaContext(1 << 20), Error);  // no such device
}

TEST_CASE("gpu: gemm_cublas f32 (TF32 off) matches gemm_cpu, all transposes, odd shapes") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  std::mt19937 rng(11);
  for (const auto& sh : kGemmShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.f, -0.5f}) {
          const int64_t M = sh.M, N = sh.N, K = sh.K;
          CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(ta); CAPTURE(tb); CAPTURE(beta);
          // Padded leading dimensions (+3) exercise the strides.
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
          const auto a = random_vec(static_cast<size_t>((ta ? K : M) * lda), rng);
          const auto b = random_vec(static_cast<size_t>((tb ? N : K) * ldb), rng);
          auto c0 = random_vec(static_cast<size_t>(M * ldc), rng);
          const float alpha = 1.5f;
          DevBuf da(a), db(b), dc(c0);
          if (beta == 0.f)  // beta == 0 must not read C: NaN there must not propagate
            RZ_CUDA_CHECK(cudaMemset(dc.ptr(), 0xFF, c0.size() * sizeof(float)));
          gemm_cublas(ctx, DType::F32, DType::F32, ta, tb, M, N, K, alpha, da.ptr(), lda, db.ptr(),
                      ldb, beta, dc.ptr(), ldc);
          const auto got = to_f64(dc.get<float>());
          CHECK(dc.guards_intact());

          auto ref = to_f64(c0), bound = abs_of(to_f64(c0));
          const auto a64 = to_f64(a), b64 = to_f64(b);
          gemm_cpu<double>(ta, tb, M, N, K, alpha, a64.data(), lda, b64.data(), ldb, beta, ref.data(), ldc);
          const auto aa = abs_of(a64), ab = abs_of(b64);
          gemm_cpu<double>(ta, tb, M, N, K, std::fabs(alpha), aa.data(), lda, ab.data(), ldb,
                           std::fabs(beta), bound.data(), ldc);
          // Compare only the M x N window; the padding columns of C stay as they were.
          std::vector<double> g2, r2, b2;
          bool padding_kept = true;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const size_t idx = static_cast<size_t>(i * ldc + j);
              if (j < N) {
                g2.push_back(got[idx]);
                r2.push_back(ref[idx]);
                b2.push_back(bound[idx]);
              } else if (beta != 0.f) {
                padding_kept = padding_kept && got[idx] == static_cast<double>(c0[idx]);
              }
            }
          CHECK(padding_kept);
          CHECK(count_outside(g2, r2, b2, 1e-4) == 0);
        }
}

TEST_CASE("gpu: gemm_cublas bf16 inputs, f32 and bf16 outputs, match gemm_cpu") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  std::mt19937 rng(12);
  for (const auto& sh : kGemmShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t M = sh.M, N = sh.N, K = sh.K;
        CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(ta); CAPTURE(tb);
        const int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
        const auto a = to_bf16(random_vec(static_cast<size_t>(M * K), rng));
        const auto b = to_bf16(random_vec(static_cast<size_t>(K * N), rng));
        const auto a64 = to_f64(a), b64 = to_f64(b);
        std::vector<double> ref(static_cast<size_t>(M * N)), bound(ref.size());
        gemm_cpu<double>(ta, tb, M, N, K, 1.0, a64.data(), lda, b64.data(), ldb, 0.0, ref.data(), ldc);
        const auto aa = abs_of(a64), ab = abs_of(b64);
        gemm_cpu<double>(ta, tb, M, N, K, 1.0, aa.data(), lda, ab.data(), ldb, 0.0, bound.data(), ldc);
        DevBuf da(a), db(b);

        // f32 output: bf16 products are exact in fp32, so the fp32 bound holds.
        DevBuf c32(ref.size() * sizeof(float));
        gemm_cublas(ctx, DType::BF16, DType::F32, ta, tb, M, N, K, 1.f, da.ptr(), lda, db.ptr(), ldb,
                    0.f, c32.ptr(), ldc);
        CHECK(count_outside(to_f64(c32.get<float>()), ref, bound, 1e-4) == 0);
        CHECK(c32.guards_intact());

        // bf16 output: one rounding to bf16 (relative 2^-9) on top.
        DevBuf c16(ref.size() * sizeof(bf16));
        gemm_cublas(ctx, DType::BF16, DType::BF16, ta, tb, M, N, K, 1.f, da.ptr(), lda, db.ptr(),
                    ldb, 0.f, c16.ptr(), ldc);
        CHECK(nmse(to_f64(c16.get<bf16>()), ref) < 1e-4);
        CHECK(c16.guards_intact());
      }
  CHECK_THROWS_AS(gemm_cublas(ctx, DType::F32, DType::BF16, false, false, 1, 1, 1, 1.f, nullptr, 1,
                              nullptr, 1, 0.f, nullptr, 1),
                  Error);
}

TEST_CASE("gpu: cuDNN conv fwd/dgrad/wgrad f32 (TF32 off) match the CPU twins") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  std::mt19937 rng(13);
  for (const auto& s : kConvShapes) {
    const Conv2dGeom g = geom_of(s);
    CAPTURE(g.N); CAPTURE(g.H); CAPTURE(g.W); CAPTURE(g.C); CAPTURE(g.K); CAPTURE(g.R);
    CAPTURE(g.sh); CAPTURE(g.ph);
    const auto x = random_vec(static_cast<size_t>(g.N * g.H * g.W * g.C), rng);
    const auto w = random_vec(static_cast<size_t>(g.K * g.R * g.S * g.C), rng);
    const auto dy = random_vec(static_cast<size_t>(g.N * g.OH * g.OW * g.K), rng);
    const ConvRef r = conv_reference(g, to_f64(x), to_f64(w), to_f64(dy));
    DevBuf dx_in(x), dw_in(w), ddy(dy);
    DevBuf y(r.y.size() * sizeof(float)), dx(r.dx.size() * sizeof(float)), dw(r.dw.size() * sizeof(float));
    conv2d_fwd_cudnn(ctx, g, DType::F32, dx_in.ptr(), dw_in.ptr(), y.ptr());
    conv2d_bwd_data_cudnn(ctx, g, DType::F32, ddy.ptr(), dw_in.ptr(), dx.ptr());
    conv2d_bwd_filter_cudnn(ctx, g, DType::F32, dx_in.ptr(), ddy.ptr(), dw.ptr());
    ctx.synchronize();
    CHECK(count_outside(to_f64(y.get<float>()), r.y, r.y_bound, 1e-4) == 0);
    CHECK(count_outside(to_f64(dx.get<float>()), r.dx, r.dx_bound, 1e-4) == 0);
    CHECK(count_outside(to_f64(dw.get<float>()), r.dw, r.dw_bound, 1e-4) == 0);
    CHECK(y.guards_intact());
    CHECK(dx.guards_intact());
    CHECK(dw.guards_intact());
  }
}

TEST_CASE("gpu: cuDNN conv fwd/dgrad/wgrad bf16 match the CPU twins (normalized MSE)") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  std::mt19937 rng(14);
  for (const auto& s : kConvShapes) {
    const Conv2dGeom g = geom_of(s);
    CAPTURE(g.N); CAPTURE(g.H); CAPTURE(g.W); CAPTURE(g.C); CAPTURE(g.K); CAPTURE(g.R);
    CAPTURE(g.sh); CAPTURE(g.ph);
    const auto x = to_bf16(random_vec(static_cast<size_t>(g.N * g.H * g.W * g.C), rng));
    const auto w = to_bf16(random_vec(static_cast<size_t>(g.K * g.R * g.S * g.C), rng));
    const auto dy = to_bf16(random_vec(static_cast<size_t>(g.N * g.OH * g.OW * g.K), rng));
    const ConvRef r = conv_reference(g, to_f64(x), to_f64(w), to_f64(dy));
    DevBuf dx_in(x), dw_in(w), ddy(dy);
    DevBuf y(r.y.size() * sizeof(bf16)), dx(r.dx.size() * sizeof(bf16)), dw(r.dw.size() * sizeof(bf16));
    conv2d_fwd_cudnn(ctx, g, DType::BF16, dx_in.ptr(), dw_in.ptr(), y.ptr());
    conv2d_bwd_data_cudnn(ctx, g, DType::BF16, ddy.ptr(), dw_in.ptr(), dx.ptr());
    conv2d_bwd_filter_cudnn(ctx, g, DType::BF16, dx_in.ptr(), ddy.ptr(), dw.ptr());
    ctx.synchronize();
    CHECK(nmse(to_f64(y.get<bf16>()), r.y) < 1e-4);
    CHECK(nmse(to_f64(dx.get<bf16>()), r.dx) < 1e-4);
    CHECK(nmse(to_f64(dw.get<bf16>()), r.dw) < 1e-4);
    CHECK(y.guards_intact());
    CHECK(dx.guards_intact());
    CHECK(dw.guards_intact());
  }
}

TEST_CASE("gpu: the cuDNN algorithm cache measures once per key") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  const Conv2dGeom g = make_conv2d_geom(2, 16, 16, 32, 32, 3, 3, 1, 1, 1, 1);
  ConvAlgoCache& cache = ctx.conv_algo_cache();
  CHECK(cache.size() == 0);
  for (ConvDirection dir : {ConvDirection::Forward, ConvDirection::BackwardData, ConvDirection::BackwardFilter}) {
    CAPTURE(static_cast<int>(dir));
    const size_t size0 = cache.size();
    const int64_t misses0 = cache.misses, hits0 = cache.hits;
    const ConvAlgoChoice first = conv2d_cudnn_algo(ctx, g, DType::F32, dir);
    CHECK(first.algo >= 0);
    CHECK(cache.size() == size0 + 1);
    CHECK(cache.misses == misses0 + 1);
    const ConvAlgoChoice second = conv2d_cudnn_algo(ctx, g, DType::F32, dir);
    CHECK(second.algo == first.algo);
    CHECK(second.math_type == first.math_type);
    CHECK(second.workspace_bytes == first.workspace_bytes);
    CHECK(cache.size() == size0 + 1);
    CHECK(cache.misses == misses0 + 1);
    CHECK(cache.hits == hits0 + 1);
  }
  // The run functions use the same entries; other dtypes/options are new keys.
  DevBuf x(std::vector<float>(static_cast<size_t>(g.N * g.H * g.W * g.C), 0.5f));
  DevBuf w(std::vector<float>(static_cast<size_t>(g.K * g.R * g.S * g.C), 0.25f));
  DevBuf y(static_cast<size_t>(g.rows() * g.K) * sizeof(float));
  const int64_t misses = cache.misses;
  conv2d_fwd_cudnn(ctx, g, DType::F32, x.ptr(), w.ptr(), y.ptr());
  CHECK(cache.misses == misses);
  CudnnConvOptions det;
  det.deterministic = true;
  conv2d_fwd_cudnn(ctx, g, DType::F32, x.ptr(), w.ptr(), y.ptr(), det);
  CHECK(cache.misses == misses + 1);
  ctx.synchronize();
}

TEST_CASE("gpu: deterministic cuDNN convolutions are bitwise reproducible") {
  RZ_SKIP_WITHOUT_GPU();
  CudaContext ctx;
  std::mt19937 rng(15);
  CudnnConvOptions det;
  det.deterministic = true;
  for (DType dt : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(dt));
    const Conv2dGeom g = make_conv2d_geom(4, 14, 14, 64, 48, 3, 3, 1, 1, 1, 1);
    for (ConvDirection dir : {ConvDirection::Forward, ConvDirection::BackwardData, ConvDirection::BackwardFilter})
      CHECK(conv2d_cudnn_algo(ctx, g, dt, dir, det).deterministic);
    const auto xf = random_vec(static_cast<size_t>(g.N * g.H * g.W * g.C), rng);
    const auto wf = random_vec(static_cast<size_t>(g.K * g.R * g.S * g.C), rng);
    const auto dyf = random_vec(static_cast<size_t>(g.rows() * g.K), rng);
    const size_t es = dtype_size(dt);
    auto upload = [&](const std::vector<float>& v) {
      return dt == DType::F32 ? std::make_unique<DevBuf>(v) : std::make_unique<DevBuf>(to_bf16(v));
    };
    auto x = upload(xf), w = upload(wf), dy = upload(dyf);
    std::vector<std::vector<unsigned char>> runs[2];
    for (auto& run : runs) {
      DevBuf y(dyf.size() * es), dx(xf.size() * es), dw(wf.size() * es);
      conv2d_fwd_cudnn(ctx, g, dt, x->ptr(), w->ptr(), y.ptr(), det);
      conv2d_bwd_data_cudnn(ctx, g, dt, dy->ptr(), w->ptr(), dx.ptr(), det);
      conv2d_bwd_filter_cudnn(ctx, g, dt, x->ptr(), dy->ptr(), dw.ptr(), det);
      ctx.synchronize();
      run = {y.get<unsigned char>(), dx.get<unsigned char>(), dw.get<unsigned char>()};
    }
    CHECK(runs[0][0] == runs[1][0]);
    CHECK(runs[0][1] == runs[1][1]);
    CHECK(runs[0][2] == runs[1][2]);
  }
}
#endif

TEST_CASE("gpu: uploads from pinned host memory are asynchronous and keep their source alive") {
  RZ_SKIP_WITHOUT_GPU();
  const int64_t n = int64_t{1} << 22;  // 16 MiB: long enough to still be in flight
  auto storage = std::make_shared<Storage>(static_cast<size_t>(n) * sizeof(float), Device::cpu(),
                                           /*pin_host=*/true);
  REQUIRE(storage->pinned());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage;
  impl->shape = {n};
  const Tensor host(impl);
  float* h = static_cast<float*>(storage->data());
  for (int64_t i = 0; i < n; ++i) h[i] = static_cast<float>(i % 1000);
  const Tensor dev = host.to(Device::cuda(0));
  // Until the copy has completed the upload holds a reference of its own, so
  // a use-count pool (data/loader.cpp) cannot hand the buffer out again;
  // afterwards it lets go.
  const std::vector<float> back = dev.to(Device::cpu()).to_vector<float>();  // synchronizes
  bool same = true;
  for (int64_t i = 0; i < n; ++i) same = same && back[static_cast<size_t>(i)] == static_cast<float>(i % 1000);
  CHECK(same);
  CHECK(pending_uploads() == 0);  // completed uploads are dropped on the next look
  CHECK(storage.use_count() == 2);  // storage + the host tensor: the upload let go
  // Pageable memory: a plain synchronous copy, nothing kept.
  const Tensor pageable = Tensor::ones({1000});
  CHECK(pageable.to(Device::cuda(0)).to(Device::cpu()).to_vector<float>() == std::vector<float>(1000, 1.0f));
  CHECK(pending_uploads() == 0);
}
TEST_CASE("gpu memory: out of GPU memory names the purpose and the free memory; the device's memory is reported") {
  RZ_SKIP_WITHOUT_GPU();
  const DeviceMemory m = cuda_memory_info(0);
  CHECK(m.total_bytes > 0);
  CHECK(m.free_bytes <= m.total_bytes);
  const int64_t huge = int64_t{1} << 48;  // 1 PiB of f32: more than any GPU
  try {
    AllocationPurpose purpose("the test's activations", "lower test.batch");
    Tensor t = Tensor::empty({huge}, DType::F32, Device::cuda(0));
    FAIL("a 1 PiB allocation succeeded");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("out of GPU memory on cuda:0") != std::string::npos);
    CHECK(msg.find("for the test's activations") != std::string::npos);
    CHECK(msg.find("bytes free") != std::string::npos);
    CHECK(msg.find("lower test.batch") != std::string::npos);
  }
  // The failed allocation left no error behind: the next one works.
  Tensor ok = Tensor::empty({1024}, DType::F32, Device::cuda(0));
  CHECK(ok.numel() == 1024);
}

}  // TEST_SUITE("gpu")
