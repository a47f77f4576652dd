#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "engine/ops.h"
#include "engine/tensor.h"

using namespace rz;

TEST_CASE("tensor: creation, shape and dtype") {
  Tensor z = Tensor::zeros({2, 3, 4, 5});
  CHECK(z.numel() == 120);
  CHECK(z.dim() == 4);
  CHECK(z.size(-1) == 5);
  CHECK(z.dtype() == DType::F32);
  CHECK(z.device() == Device::cpu());
  CHECK(z.nbytes() == 480);
  for (float v : z.to_vector<float>()) CHECK(v == 0.0f);
  for (double v : Tensor::ones({3}, DType::F64).to_vector<double>()) CHECK(v == 1.0);
  for (int64_t v : Tensor::full({2}, 7, DType::I64).to_vector<int64_t>()) CHECK(v == 7);
  CHECK_THROWS_AS(z.size(4), rz::Error);
  CHECK_THROWS_AS(Tensor::zeros({2, -1}), rz::Error);
  CHECK(reinterpret_cast<uintptr_t>(z.raw_data()) % 64 == 0);
}

TEST_CASE("tensor: views share storage") {
  Tensor a = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor r = reshape(a, {2, 3});
  Tensor rows = a.narrow0(1, 2);
  CHECK(r.impl_ptr()->storage == a.impl_ptr()->storage);
  CHECK(rows.to_vector<float>() == std::vector<float>{2, 3, 4, 5});
  rows.fill_(9.0);
  CHECK(a.to_vector<float>() == std::vector<float>{0, 1, 9, 9, 9, 9});
  CHECK(r.to_vector<float>() == std::vector<float>{0, 1, 9, 9, 9, 9});
  CHECK_THROWS_AS(reshape(a, {4, 2}), rz::Error);
  CHECK(reshape(a, {-1}).shape() == Shape{6});
}

TEST_CASE("tensor: seeded random numbers are reproducible and well distributed") {
  Generator g1(42), g2(42), g3(43);
  Tensor a = Tensor::normal({10000}, 0.0, 2.0, g1);
  Tensor b = Tensor::normal({10000}, 0.0, 2.0, g2);
  Tensor c = Tensor::normal({10000}, 0.0, 2.0, g3);
  CHECK(a.to_vector<float>() == b.to_vector<float>());
  CHECK(a.to_vector<float>() != c.to_vector<float>());
  double s = 0, s2 = 0;
  for (float v : a.to_vector<float>()) {
    s += v;
    s2 += static_cast<double>(v) * v;
  }
  const double mean = s / 10000, var = s2 / 10000 - mean * mean;
  CHECK(std::abs(mean) < 0.08);          // 4 standard errors of 2/sqrt(1e4)
  CHECK(std::abs(var - 4.0) < 0.25);
  Tensor u = Tensor::uniform({10000}, -3.0, 5.0, g1, DType::F64);
  double lo = 1e9, hi = -1e9;
  for (double v : u.to_vector<double>()) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo >= -3.0);
  CHECK(hi < 5.0);
  CHECK(lo < -2.99);
  CHECK(hi > 4.99);
}

TEST_CASE("tensor: bf16 rounds to nearest even") {
  // bf16 keeps 8 significand bits: around 1.0 the spacing is 2^-7.
  auto rt = [](float f) { return bf16_to_f32(f32_to_bf16(f)); };
  CHECK(rt(1.0f) == 1.0f);
  CHECK(rt(1.0f + 0x1p-8f) == 1.0f);                  // exact tie -> even (1.0)
  CHECK(rt(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);    // tie between 1+2^-7 and 1+2^-6 -> even
  CHECK(rt(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);  // above the tie -> up
  CHECK(rt(-2.5f) == -2.5f);
  CHECK(std::isinf(rt(std::numeric_limits<float>::infinity())));
  CHECK(std::isnan(rt(std::numeric_limits<float>::quiet_NaN())));
  CHECK(rt(3.4e38f) == std::numeric_limits<float>::infinity());  // rounds past the max bf16
  CHECK(f32_to_bf16(1.0f).bits == 0x3f80);

  Tensor x = Tensor::from_vector(std::vector<float>{1.0f + 0x1p-8f, 3.0f, -0.15625f}, {3});
  Tensor h = x.to(DType::BF16);
  CHECK(h.dtype() == DType::BF16);
  CHECK(h.nbytes() == 6);
  CHECK(h.to(DType::F32).to_vector<float>() == std::vector<float>{1.0f, 3.0f, -0.15625f});
}

TEST_CASE("tensor: dtype conversions") {
  Tensor f = Tensor::from_vector(std::vector<float>{-1.7f, 0.4f, 2.5f, 300.0f}, {4});
  CHECK(f.to(DType::U8).to_vector<uint8_t>() == std::vector<uint8_t>{0, 0, 3, 255});
  CHECK(f.to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 2, 300});
  CHECK(f.to(DType::F64).to_vector<double>()[1] == static_cast<double>(0.4f));
  Tensor u = Tensor::from_vector(std::vector<uint8_t>{0, 128, 255}, {3});
  CHECK(u.to(DType::F32).to_vector<float>() == std::vector<float>{0, 128, 255});
  CHECK_THROWS_AS(f.data<double>(), rz::Error);
}

TEST_CASE("tensor: in-place arithmetic and item") {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  Tensor b = Tensor::from_vector(std::vector<float>{10, 20, 30}, {3});
  a.add_(b, 0.5).mul_(2.0);
  CHECK(a.to_vector<float>() == std::vector<float>{12, 24, 36});
  CHECK(sum(a).item() == doctest::Approx(72.0));
  CHECK(mean(a).item() == doctest::Approx(24.0));
  CHECK_THROWS_AS(a.item(), rz::Error);
  Tensor c = a.clone();
  c.fill_(0);
  CHECK(a.to_vector<float>()[0] == 12.0f);
}

TEST_CASE("tensor: devices") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK(Device::cuda(1).str() == "cuda:1");
  CHECK_THROWS_WITH_AS(parse_device("tpu"), doctest::Contains("bad device 'tpu'"), rz::Error);
  CHECK_THROWS_AS(parse_device("cuda:x"), rz::Error);
  if (cuda_device_count() == 0) {
    CHECK(parse_device("auto") == Device::cpu());
    CHECK_THROWS_WITH_AS(parse_device("cuda:0"), doctest::Contains("0 CUDA device"), rz::Error);
  } else {
    CHECK(parse_device("auto") == Device::cuda(0));
  }
}

TEST_CASE("tensor: pinned host storage falls back to ordinary memory without a GPU") {
  Storage s(4096, Device::cpu(), /*pin_host=*/true);
  CHECK(s.pinned() == (cuda_device_count() > 0));
  static_cast<char*>(s.data())[4095] = 1;  // usable either way
  CHECK(reinterpret_cast<uintptr_t>(s.data()) % 64 == 0);
}
