// CUDA reductions, bias kernels, scalar broadcasts, multi-tensor sum of
// squares / clipping and permute against their CPU twins, on odd sizes and
// sizes around block and chunk boundaries, with sentinel guards. Sums: fp32
// rtol 1e-5 relative to the sum of |terms|; bf16 inputs are rounded before the
// CPU twin sees them, so only the output rounding differs. sum_cuda run twice
// must give identical bits (no atomics).
#include "tests/gpu/gpu_test.h"

#if defined(RZ_HAVE_CUDA)
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/generator.h"
#include "kernels/common/bf16.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/reduce.cuh"
#include "tests/gpu/gpu_guard.h"
#endif

using namespace rz;

#if defined(RZ_HAVE_CUDA)
namespace {

using gpu_test::Guarded;

std::vector<float> random_vec(int64_t n, Generator& gen, double lo = -1, double hi = 1) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = static_cast<float>(gen.uniform(lo, hi));
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(f32_to_bf16(v[i]));
  return out;
}

double abs_sum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += std::fabs(static_cast<double>(x));
  return s;
}

const cudaStream_t kStream = cudaStreamPerThread;

}  // namespace
#endif

TEST_SUITE("gpu") {

TEST_CASE("gpu sum_cuda matches sum_cpu and is bitwise reproducible") {
  RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
  Generator gen(1);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{4097},
                    (int64_t{1} << 20) + 3}) {
    CAPTURE(n);
    const std::vector<float> x = random_vec(n, gen);
    Guarded<float> dx(x);
    Guarded<float> out(1), out2(1);
    REQUIRE(sum_cuda(dx.get(), n, out.get(), kStream) == cudaSuccess);
    REQUIRE(sum_cuda(dx.get(), n, out2.get(), kStream) == cudaSuccess);
    const float a = out.read()[0], b = out2.read()[0];
    CHECK(std::memcmp(&a, &b, sizeof a) == 0);
    CHECK(std::fabs(a - sum_cpu(x.data(), n)) <= 1e-5 * (abs_sum(x) + 1e-30) + 1e-6);
    const std::vector<float> xr = rounded(x);
    Guarded<bf16> dh(to_bf16(x));
    Guarded<float> outh(1);
    REQUIRE(sum_cuda(dh.get(), n, outh.get(), kStream) == cudaSuccess);
    CHECK(std::fabs(outh.read()[0] - sum_cpu(xr.data(), n)) <= 1e-5 * (abs_sum(xr) + 1e-30) + 1e-6);
  }
#endif
}

TEST_CASE("gpu col_sum_cuda, bias_add_cuda and the scalar broadcasts") {
  RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
  Generator gen(2);
  for (int64_t rows : {1, 5, 37}) {
    for (int64_t cols : {1, 11, 67, 2048}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::vector<float> dy = random_vec(rows * cols, gen), b = random_vec(cols, gen);
      Guarded<float> ddy(dy), db(cols), dbias(b);
      REQUIRE(col_sum_cuda(ddy.get(), rows, cols, db.get(), kStream) == cudaSuccess);
      std::vector<float> ref(static_cast<size_t>(cols));
      col_sum_cpu(dy.data(), rows, cols, ref.data());
      const auto got = db.read();
      for (int64_t c = 0; c < cols; ++c)
        CHECK(std::fabs(got[static_cast<size_t>(c)] - ref[static_cast<size_t>(c)]) <= 1e-5 * static_cast<double>(rows));
      REQUIRE(bias_add_cuda(ddy.get(), dbias.get(), rows, cols, kStream) == cudaSuccess);
      std::vector<float> y = dy;
      bias_add_cpu(y.data(), b.data(), rows, cols);
      CHECK(ddy.read() == y);  // one fp32 add per element: exact
      // bf16 storage: the sum of bf16-rounded values, rounded once.
      Guarded<bf16> dh(to_bf16(dy));
      Guarded<float> dbh(cols);
      REQUIRE(col_sum_cuda(dh.get(), rows, cols, dbh.get(), kStream) == cudaSuccess);
      const std::vector<float> dyr = rounded(dy);
      col_sum_cpu(dyr.data(), rows, cols, ref.data());
      const auto goth = dbh.read();
      for (int64_t c = 0; c < cols; ++c)
        CHECK(std::fabs(goth[static_cast<size_t>(c)] - ref[static_cast<size_t>(c)]) <= 1e-5 * static_cast<double>(rows));
    }
  }
  const std::vector<float> x = random_vec(4099, gen), s{-2.5f};
  Guarded<float> dx(x), ds(s), dy(4099), df(4099);
  REQUIRE(scale_by_scalar_cuda(dx.get(), ds.get(), dy.get(), 4099, kStream) == cudaSuccess);
  REQUIRE(fill_from_scalar_cuda(df.get(), ds.get(), 4099, kStream) == cudaSuccess);
  const auto y = dy.read(), f = df.read();
  for (size_t i = 0; i < x.size(); ++i) {
    CHECK(y[i] == x[i] * -2.5f);
    CHECK(f[i] == -2.5f);
  }
#endif
}

TEST_CASE("gpu sum_squares_multi_cuda and clip_scale_multi_cuda over a tensor list") {
  RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
  Generator gen(3);
  const std::vector<int64_t> sizes{4097, 0, 1, kMultiTensorChunk, 20000, 3};
  std::vector<std::vector<float>> host;
  std::vector<std::unique_ptr<Guarded<float>>> dev;
  std::vector<const float*> ptrs;
  double ref = 0;
  for (int64_t n : sizes) {
    host.push_back(random_vec(n, gen, -3, 3));
    ref += sum_squares_cpu(host.back().data(), n);
    dev.push_back(std::make_unique<Guarded<float>>(host.back()));
    ptrs.push_back(n == 3 ? nullptr : dev.back()->get());  // the last tensor is skipped
  }
  ref -= sum_squares_cpu(host.back().data(), 3);
  const int count = static_cast<int>(sizes.size());
  std::vector<int64_t> offsets(sizes.size() + 1);
  const int64_t total = multi_tensor_chunk_offsets(sizes.data(), count, offsets.data());
  Guarded<const float*> dptrs(ptrs);
  Guarded<int64_t> dsizes(sizes), doffsets(offsets);
  TensorList list;
  list.grads = dptrs.get();
  list.sizes = dsizes.get();
  list.chunk_offsets = doffsets.get();
  list.count = count;
  list.total_chunks = total;
  Guarded<double> partials(total), out(1);
  REQUIRE(sum_squares_multi_cuda(list, partials.get(), out.get(), kStream) == cudaSuccess);
  const double got = out.read()[0];
  CHECK(got == doctest::Approx(ref).epsilon(1e-12));
  const double max_norm = 0.5 * std::sqrt(ref);
  REQUIRE(clip_scale_multi_cuda(list, out.get(), max_norm, kStream) == cudaSuccess);
  const float coef = static_cast<float>(max_norm / (std::sqrt(got) + 1e-6));
  for (size_t t = 0; t < sizes.size(); ++t) {
    const auto v = dev[t]->read();
    for (size_t i = 0; i < v.size(); ++i)
      CHECK(v[i] == (ptrs[t] == nullptr ? host[t][i] : host[t][i] * coef));
  }
#endif
}

TEST_CASE("gpu permute4_cuda matches permute4_cpu for every axis order") {
  RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
  Generator gen(4);
  const std::array<int64_t, 4> dims{2, 3, 5, 7};
  const std::vector<float> x = random_vec(2 * 3 * 5 * 7, gen);
  Guarded<float> dx(x);
  std::array<int, 4> perm{0, 1, 2, 3};
  do {
    Guarded<float> dy(static_cast<int64_t>(x.size()));
    REQUIRE(permute4_cuda(dx.get(), dy.get(), dims, perm, kStream) == cudaSuccess);
    std::vector<float> ref(x.size());
    permute4_cpu(reinterpret_cast<const uint32_t*>(x.data()), reinterpret_cast<uint32_t*>(ref.data()),
                 dims, perm);
    CHECK(dy.read() == ref);
  } while (std::next_permutation(perm.begin(), perm.end()));
#endif
}

}  // TEST_SUITE
