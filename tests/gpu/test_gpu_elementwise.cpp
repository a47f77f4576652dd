// CUDA elementwise kernels against their CPU twins, on odd sizes, with
// sentinel guards around every output to catch out-of-bounds writes.
#include "tests/gpu/gpu_test.h"

#include <cmath>
#include <cstring>

#include "engine/ops.h"
#include "engine/tensor.h"
#if defined(RZ_HAVE_CUDA)
#include "engine/cuda_check.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/elementwise.cuh"
#endif

using namespace rz;

TEST_SUITE("gpu") {
TEST_CASE("gpu: tensor copies between host and device round-trip") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(1);
  Tensor h = Tensor::uniform({3, 5, 7, 2}, -4, 4, gen);
  Tensor d = h.to(Device::cuda(0));
  CHECK(d.device() == Device::cuda(0));
  CHECK(d.to(Device::cpu()).to_vector<float>() == h.to_vector<float>());
  CHECK(d.clone().to(Device::cpu()).to_vector<float>() == h.to_vector<float>());
  CHECK(d.narrow0(1, 2).to(Device::cpu()).to_vector<float>() == h.narrow0(1, 2).to_vector<float>());
}

#if defined(RZ_HAVE_CUDA)
namespace {
constexpr int64_t kGuard = 67;  // elements of sentinel on each side

// Runs `launch(out_ptr)` on a device buffer padded with 0xA5 bytes and checks
// the padding afterwards; returns the n output elements.
template <typename T, typename F> std::vector<T> guarded(int64_t n, F launch) {
  Tensor buf = Tensor::empty({n + 2 * kGuard}, dtype_of<T>::value, Device::cuda(0));
  RZ_CUDA_CHECK(cudaMemset(buf.raw_data(), 0xA5, buf.nbytes()));
  RZ_CUDA_CHECK(launch(buf.data<T>() + kGuard));
  RZ_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor host = buf.to(Device::cpu());
  const auto* bytes = static_cast<const unsigned char*>(host.raw_data());
  const size_t guard_bytes = kGuard * sizeof(T);
  bool intact = true;
  for (size_t i = 0; i < guard_bytes; ++i)
    intact = intact && bytes[i] == 0xA5 && bytes[host.nbytes() - 1 - i] == 0xA5;
  CHECK_MESSAGE(intact, "a kernel wrote outside its output");
  const T* p = host.data<T>() + kGuard;
  return std::vector<T>(p, p + n);
}
}  // namespace

TEST_CASE("gpu: elementwise kernels match the CPU twins") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(2);
  for (int64_t n : {1, 7, 255, 256, 257, 100003}) {
    CAPTURE(n);
    Tensor a = Tensor::uniform({n}, -3, 3, gen), b = Tensor::uniform({n}, -3, 3, gen);
    Tensor da = a.to(Device::cuda(0)), db = b.to(Device::cuda(0));
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    std::vector<float> expect(static_cast<size_t>(n));
    cudaStream_t s = cudaStreamPerThread;

    add_cpu(pa, pb, expect.data(), n);
    CHECK(guarded<float>(n, [&](float* o) { return add_cuda(da.data<float>(), db.data<float>(), o, n, s); }) == expect);
    sub_cpu(pa, pb, expect.data(), n);
    CHECK(guarded<float>(n, [&](float* o) { return sub_cuda(da.data<float>(), db.data<float>(), o, n, s); }) == expect);
    mul_cpu(pa, pb, expect.data(), n);
    CHECK(guarded<float>(n, [&](float* o) { return mul_cuda(da.data<float>(), db.data<float>(), o, n, s); }) == expect);
    fill_cpu(expect.data(), 2.5f, n);
    CHECK(guarded<float>(n, [&](float* o) { return fill_cuda(o, 2.5f, n, s); }) == expect);

    // In-place ones: run on a copy of b, compare with the CPU on a copy of b.
    std::vector<float> acc(pb, pb + n);
    axpy_cpu(0.75f, pa, acc.data(), n);
    Tensor dacc = db.clone();
    dacc.add_(da, 0.75);
    CHECK(dacc.to(Device::cpu()).to_vector<float>() == acc);
    scale_cpu(acc.data(), -1.5f, n);
    dacc.mul_(-1.5);
    CHECK(dacc.to(Device::cpu()).to_vector<float>() == acc);

    // Casts, bf16 included (the rounding must agree bit for bit).
    std::vector<bf16> h16(static_cast<size_t>(n));
    cast_cpu(pa, h16.data(), n);
    const auto d16 = guarded<bf16>(n, [&](bf16* o) { return cast_cuda(da.data<float>(), o, n, s); });
    bool same = true;
    for (int64_t i = 0; i < n; ++i) same = same && d16[i].bits == h16[i].bits;
    CHECK(same);
    std::vector<uint8_t> h8(static_cast<size_t>(n));
    cast_cpu(pa, h8.data(), n);
    CHECK(guarded<uint8_t>(n, [&](uint8_t* o) { return cast_cuda(da.data<float>(), o, n, s); }) == h8);
  }
}

TEST_CASE("gpu: tensor-level ops on CUDA agree with the CPU") {
  RZ_SKIP_WITHOUT_GPU();
  Generator gen(3);
  Tensor a = Tensor::uniform({4, 3, 5}, -1, 1, gen), b = Tensor::uniform({4, 3, 5}, -1, 1, gen);
  Tensor da = a.to(Device::cuda(0)), db = b.to(Device::cuda(0));
  CHECK((da + db).to(Device::cpu()).to_vector<float>() == (a + b).to_vector<float>());
  CHECK((da * db).to(Device::cpu()).to_vector<float>() == (a * b).to_vector<float>());
  CHECK(da.to(DType::BF16).to(DType::F32).to(Device::cpu()).to_vector<float>() ==
        a.to(DType::BF16).to(DType::F32).to_vector<float>());
  CHECK(Tensor::zeros({5}, DType::F32, Device::cuda(0)).to(Device::cpu()).to_vector<float>() ==
        std::vector<float>(5, 0.0f));
}
#endif

TEST_CASE("gpu: pinned host storage when a device is usable") {
  RZ_SKIP_WITHOUT_GPU();
  Storage s(1 << 20, Device::cpu(), /*pin_host=*/true);
  CHECK(s.pinned());
}
}
