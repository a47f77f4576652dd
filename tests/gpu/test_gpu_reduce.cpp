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
#include "tests/gpu/gpu_vec.h"
#endif

using namespace rz;

#if defined(RZ_HAVE_CUDA)
namespace {

using gpu_test::random_vec;
using gpu_test::rounded;
using gpu_test::to_bf16;
using gpu_test::to_f32;

using gpu_test::Guarded;

template <typename T>
T store_as(float v);
template <>
float store_as<float>(float v) {
  return v;
}
template <>
bf16 store_as<bf16>(float v) {
  return f32_to_bf16(v);
}
float as_f32(float v) {
  return v;
}
float as_f32(bf16 v) {
  return bf16_to_f32(v);
}

double abs_sum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += std::fabs(static_cast<double>(x));
  return s;
}

const cudaStream_t kStream = cudaStreamPerThread;

// Around the block size (256), the chunk size (4096), the 1024-partial cap of
// the sum (262144 elements) and a size past it.
const int64_t kSizes[] = {
    0, 1, 255, 256, 257, 4095, 4096, 4097, 262143, 262145, (int64_t{1} << 20) + 3};

// The scalar broadcasts for storage type T: y = x * s (out of place and in
// place) and y = s, against the same products on bf16-rounded inputs.
template <typename T>
void check_scalar_broadcasts(Generator& gen) {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    const std::vector<float> xf = random_vec(n, gen), s{-2.5f};
    std::vector<T> x(xf.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = store_as<T>(xf[i]);
    Guarded<T> dx(x), dy(n), df(n);
    Guarded<float> ds(s);
    REQUIRE(scale_by_scalar_cuda(dx.get(), ds.get(), dy.get(), n, kStream) == cudaSuccess);
    REQUIRE(fill_from_scalar_cuda(df.get(), ds.get(), n, kStream) == cudaSuccess);
    const std::vector<T> y = dy.read(), f = df.read();
    bool ok_y = true, ok_f = true;
    for (size_t i = 0; i < x.size(); ++i) {
      ok_y = ok_y && as_f32(y[i]) == as_f32(store_as<T>(as_f32(x[i]) * -2.5f));
      ok_f = ok_f && as_f32(f[i]) == -2.5f;
    }
    CHECK(ok_y);
    CHECK(ok_f);
    REQUIRE(scale_by_scalar_cuda(dx.get(), ds.get(), dx.get(), n, kStream) == cudaSuccess);
    const std::vector<T> in_place = dx.read();
    bool same = true;
    for (size_t i = 0; i < x.size(); ++i) same = same && as_f32(in_place[i]) == as_f32(y[i]);
    CHECK(same);
  }
}

}  // namespace
#endif

TEST_SUITE("gpu") {
  TEST_CASE("gpu sum_cuda matches sum_cpu and is bitwise reproducible") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    Generator gen(1);
    for (int64_t n : kSizes) {
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
      CHECK(std::fabs(outh.read()[0] - sum_cpu(xr.data(), n)) <=
            1e-5 * (abs_sum(xr) + 1e-30) + 1e-6);
    }
#endif
  }

  TEST_CASE("gpu col_sum_cuda and bias_add_cuda") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    Generator gen(2);
    for (int64_t rows : {0, 1, 5, 37, 300}) {
      for (int64_t cols : {1, 11, 67, 255, 257, 2048}) {
        CAPTURE(rows);
        CAPTURE(cols);
        const std::vector<float> dy = random_vec(rows * cols, gen), b = random_vec(cols, gen);
        // Tolerance of a column: 1e-5 of the sum of |terms| (each |term| <= 1).
        const double tol = 1e-5 * static_cast<double>(rows) + 1e-6;
        Guarded<float> ddy(dy), db(cols), dbias(b);
        REQUIRE(col_sum_cuda(ddy.get(), rows, cols, db.get(), kStream) == cudaSuccess);
        std::vector<float> ref(static_cast<size_t>(cols));
        col_sum_cpu(dy.data(), rows, cols, ref.data());
        const auto got = db.read();  // every column written (zeros for rows == 0)
        for (size_t c = 0; c < ref.size(); ++c) CHECK(std::fabs(got[c] - ref[c]) <= tol);
        REQUIRE(bias_add_cuda(ddy.get(), dbias.get(), rows, cols, kStream) == cudaSuccess);
        std::vector<float> y = dy;
        bias_add_cpu(y.data(), b.data(), rows, cols);
        CHECK(ddy.read() == y);  // one fp32 add per element: exact
        // bf16 storage: the CPU twin sees the bf16-rounded values.
        const std::vector<float> dyr = rounded(dy);
        Guarded<bf16> dh(to_bf16(dy));
        Guarded<float> dbh(cols);
        REQUIRE(col_sum_cuda(dh.get(), rows, cols, dbh.get(), kStream) == cudaSuccess);
        col_sum_cpu(dyr.data(), rows, cols, ref.data());
        const auto goth = dbh.read();
        for (size_t c = 0; c < ref.size(); ++c) CHECK(std::fabs(goth[c] - ref[c]) <= tol);
        // bias add in fp32 on the rounded values, rounded once to bf16.
        REQUIRE(bias_add_cuda(dh.get(), dbias.get(), rows, cols, kStream) == cudaSuccess);
        std::vector<float> yr = dyr;
        bias_add_cpu(yr.data(), b.data(), rows, cols);
        const auto goty = dh.read();
        bool exact = true;
        for (size_t i = 0; i < yr.size(); ++i)
          exact = exact && goty[i].bits == f32_to_bf16(yr[i]).bits;
        CHECK(exact);
      }
    }
#endif
  }

  TEST_CASE("gpu scale_by_scalar_cuda and fill_from_scalar_cuda") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    Generator gen(5);
    check_scalar_broadcasts<float>(gen);
    check_scalar_broadcasts<bf16>(gen);
#endif
  }

  TEST_CASE("gpu sum_squares_multi_cuda and clip_scale_multi_cuda over a tensor list") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    Generator gen(3);
    const std::vector<int64_t> sizes{
        4097, 0, 1, kMultiTensorChunk - 1, kMultiTensorChunk, 20000, (int64_t{1} << 20) + 3, 3};
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
    Guarded<double> out2(1);
    REQUIRE(sum_squares_multi_cuda(list, partials.get(), out2.get(), kStream) == cudaSuccess);
    const double again = out2.read()[0];
    CHECK(std::memcmp(&got, &again, sizeof got) == 0);  // chunk-ordered combine: same bits
    // A norm under max_norm: coef >= 1, nothing changes.
    REQUIRE(clip_scale_multi_cuda(list, out.get(), 2.0 * std::sqrt(ref), kStream) == cudaSuccess);
    for (size_t t = 0; t < sizes.size(); ++t) CHECK(dev[t]->read() == host[t]);
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

  TEST_CASE("gpu sum_squares_multi_cuda of a list without chunks is 0") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    const std::vector<int64_t> sizes{0, 0}, offsets{0, 0, 0};
    const std::vector<const float*> ptrs{nullptr, nullptr};
    Guarded<const float*> dptrs(ptrs);
    Guarded<int64_t> dsizes(sizes), doffsets(offsets);
    TensorList list;
    list.grads = dptrs.get();
    list.sizes = dsizes.get();
    list.chunk_offsets = doffsets.get();
    list.count = 2;
    list.total_chunks = 0;
    Guarded<double> out(std::vector<double>{7.0});
    REQUIRE(sum_squares_multi_cuda(list, nullptr, out.get(), kStream) == cudaSuccess);
    CHECK(out.read()[0] == 0.0);
    REQUIRE(clip_scale_multi_cuda(list, out.get(), 1.0, kStream) == cudaSuccess);
    CHECK(cudaStreamSynchronize(kStream) == cudaSuccess);
#endif
  }

  TEST_CASE("gpu permute4_cuda matches permute4_cpu for every axis order") {
    RZ_SKIP_WITHOUT_GPU();
#if defined(RZ_HAVE_CUDA)
    Generator gen(4);
    // Odd dims, one of them 1, and a shape past one block of threads; and empty.
    const std::array<int64_t, 4> shapes[] = {{2, 3, 5, 7}, {3, 1, 67, 33}, {2, 0, 3, 5}};
    for (const auto& dims : shapes) {
      const int64_t n = dims[0] * dims[1] * dims[2] * dims[3];
      const std::vector<float> x = random_vec(n, gen);
      const std::vector<bf16> xh = to_bf16(x);
      Guarded<float> dx(x);
      Guarded<bf16> dxh(xh);
      std::array<int, 4> perm{0, 1, 2, 3};
      do {
        CAPTURE(perm[0] * 1000 + perm[1] * 100 + perm[2] * 10 + perm[3]);
        Guarded<float> dy(n);
        REQUIRE(permute4_cuda(dx.get(), dy.get(), dims, perm, kStream) == cudaSuccess);
        std::vector<float> ref(x.size());
        permute4_cpu(reinterpret_cast<const uint32_t*>(x.data()),
                     reinterpret_cast<uint32_t*>(ref.data()), dims, perm);
        CHECK(dy.read() == ref);
        Guarded<bf16> dyh(n);
        REQUIRE(permute4_cuda(dxh.get(), dyh.get(), dims, perm, kStream) == cudaSuccess);
        std::vector<uint16_t> refh(xh.size());
        permute4_cpu(reinterpret_cast<const uint16_t*>(xh.data()), refh.data(), dims, perm);
        const std::vector<bf16> goth = dyh.read();
        bool same = true;
        for (size_t i = 0; i < refh.size(); ++i) same = same && goth[i].bits == refh[i];
        CHECK(same);
      } while (std::next_permutation(perm.begin(), perm.end()));
    }
    const std::array<int, 4> bad{0, 1, 1, 3};
    CHECK(permute4_cuda(static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
                        std::array<int64_t, 4>{1, 1, 1, 1}, bad, kStream) == cudaErrorInvalidValue);
#endif
  }

}  // TEST_SUITE
