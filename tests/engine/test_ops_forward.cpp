// Forward values of the op front-ends against independent sources: numbers
// worked out by hand, or a direct formula written here (never our own kernels).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace rz;

namespace {
// Direct definition of an NHWC/KRSC convolution, as six nested loops.
std::vector<double> conv_direct(const Tensor& x, const Tensor& w, int64_t stride, int64_t pad) {
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t K = w.size(0), R = w.size(1), S = w.size(2);
  const int64_t OH = (H + 2 * pad - R) / stride + 1, OW = (W + 2 * pad - S) / stride + 1;
  const double* px = x.data<double>();
  const double* pw = w.data<double>();
  std::vector<double> y(static_cast<size_t>(N * OH * OW * K), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t k = 0; k < K; ++k) {
          double s = 0;
          for (int64_t r = 0; r < R; ++r)
            for (int64_t q = 0; q < S; ++q)
              for (int64_t c = 0; c < C; ++c) {
                const int64_t ih = oh * stride - pad + r, iw = ow * stride - pad + q;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += px[((n * H + ih) * W + iw) * C + c] * pw[((k * R + r) * S + q) * C + c];
              }
          y[static_cast<size_t>(((n * OH + oh) * OW + ow) * K + k)] = s;
        }
  return y;
}
}  // namespace

TEST_CASE("forward: conv2d by hand") {
  // 1x3x3x1 input 1..9, 2x2 kernel of ones, stride 1, no padding:
  // each output is the sum of a 2x2 window: 1+2+4+5=12, 2+3+5+6=16, 4+5+7+8=24, 5+6+8+9=28.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 3, 3, 1});
  Tensor w = Tensor::ones({1, 2, 2, 1}, DType::F64);
  CHECK(conv2d(x, w).to_vector<double>() == std::vector<double>{12, 16, 24, 28});
  // 3x3 kernel of ones with padding 1, stride 2: windows centred on (0,0), (0,2), (2,0), (2,2):
  // 1+2+4+5=12, 2+3+5+6=16, 4+5+7+8=24, 5+6+8+9=28 — the same four corner sums.
  Tensor w3 = Tensor::ones({1, 3, 3, 1}, DType::F64);
  CHECK(conv2d(x, w3, {2, 1}).to_vector<double>() == std::vector<double>{12, 16, 24, 28});
  // Two input channels, weights picking channel 1 only (weight [1,1,1,2] = {0, 1}).
  Tensor x2 = Tensor::from_vector(std::vector<double>{1, 10, 2, 20}, {1, 1, 2, 2});
  Tensor pick = Tensor::from_vector(std::vector<double>{0, 1}, {1, 1, 1, 2});
  CHECK(conv2d(x2, pick).to_vector<double>() == std::vector<double>{10, 20});
}

TEST_CASE("forward: conv2d matches the direct formula on odd shapes (f32 and f64)") {
  Generator gen(3);
  struct Case {
    int64_t N, H, W, C, K, k, stride, pad;
  };
  for (const Case c : {Case{2, 7, 5, 3, 5, 3, 1, 1}, Case{1, 9, 9, 4, 6, 3, 2, 1},
                       Case{3, 6, 7, 8, 4, 1, 1, 0}, Case{1, 5, 8, 3, 2, 1, 2, 0},
                       Case{1, 11, 10, 3, 4, 7, 2, 3}}) {
    Tensor x = Tensor::uniform({c.N, c.H, c.W, c.C}, -1, 1, gen, DType::F64);
    Tensor w = Tensor::uniform({c.K, c.k, c.k, c.C}, -1, 1, gen, DType::F64);
    const auto expect = conv_direct(x, w, c.stride, c.pad);
    const auto got = conv2d(x, w, {c.stride, c.pad}).to_vector<double>();
    REQUIRE(got.size() == expect.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(expect[i]).epsilon(1e-12));
    const auto got32 = conv2d(x.to(DType::F32), w.to(DType::F32), {c.stride, c.pad}).to_vector<float>();
    for (size_t i = 0; i < got32.size(); ++i)
      CHECK(std::abs(got32[i] - expect[i]) <= 1e-5 * (1 + std::abs(expect[i])) * static_cast<double>(c.k));
  }
}

TEST_CASE("forward: linear by hand") {
  // x = [[1, 2]], w = [[1, 0], [2, -1], [0.5, 0.5]], b = [0, 1, -1]
  // y = [1*1+2*0+0, 1*2-2*1+1, 0.5+1-1] = [1, 1, 0.5]
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2}, {1, 2});
  Tensor w = Tensor::from_vector(std::vector<double>{1, 0, 2, -1, 0.5, 0.5}, {3, 2});
  Tensor b = Tensor::from_vector(std::vector<double>{0, 1, -1}, {3});
  CHECK(linear(x, w, b).to_vector<double>() == std::vector<double>{1, 1, 0.5});
  CHECK(linear(x, w, Tensor()).to_vector<double>() == std::vector<double>{1, 0, 1.5});
}

TEST_CASE("forward: batch norm, SE scale and pools on a hand example") {
  // Channel 0 holds {1, 3}, channel 1 holds {2, 6}: means 2 and 4, biased
  // variances 1 and 4, so xhat = {-1, 1} in both (eps = 0).
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 6}, {1, 1, 2, 2});
  Tensor g = Tensor::from_vector(std::vector<double>{2, 1}, {2});
  Tensor b = Tensor::from_vector(std::vector<double>{0, 10}, {2});
  Tensor rm = Tensor::zeros({2}, DType::F64), rv = Tensor::ones({2}, DType::F64);
  auto y = batch_norm2d(x, g, b, rm, rv, {true, 0.1, 0.0}).to_vector<double>();
  CHECK(y[0] == doctest::Approx(-2));
  CHECK(y[1] == doctest::Approx(9));
  CHECK(y[2] == doctest::Approx(2));
  CHECK(y[3] == doctest::Approx(11));
  // running: mean 0.9*0 + 0.1*{2,4}; var 0.9*1 + 0.1*unbiased{2, 8}
  CHECK(rm.to_vector<double>()[1] == doctest::Approx(0.4));
  CHECK(rv.to_vector<double>()[0] == doctest::Approx(1.1));
  CHECK(rv.to_vector<double>()[1] == doctest::Approx(1.7));
  // eval uses the running statistics: (3 - 0.2) / sqrt(1.1) * 2 + 0
  auto ye = batch_norm2d(x, g, b, rm, rv, {false, 0.1, 0.0}).to_vector<double>();
  CHECK(ye[2] == doctest::Approx(2.8 / std::sqrt(1.1) * 2));

  Tensor s = Tensor::from_vector(std::vector<double>{0.5, -1}, {1, 2});
  CHECK(channel_scale(x, s).to_vector<double>() == std::vector<double>{0.5, -2, 1.5, -6});
  CHECK(global_avg_pool(x).to_vector<double>() == std::vector<double>{2, 4});
  // 3x3 max pool, stride 2, pad 1 over a 1x3x3x1 ramp 1..9: windows at (0,0),(0,2),(2,0),(2,2)
  Tensor r = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 3, 3, 1});
  CHECK(max_pool2d(r, {3, 2, 1, false, true}).to_vector<double>() == std::vector<double>{5, 6, 8, 9});
  // 2x2 avg pool, stride 2, ceil mode, no pad counting: windows {1,2,4,5}, {3,6}, {7,8}, {9}
  CHECK(avg_pool2d(r, {2, 2, 0, true, false}).to_vector<double>() ==
        std::vector<double>{3, 4.5, 7.5, 9});
}

TEST_CASE("forward: losses by formula") {
  // BCE: logit 0 costs log 2 for either target; logit 100 with target 1 costs log1p(e^-100).
  Tensor l = Tensor::from_vector(std::vector<double>{0, 100, -100, 2}, {1, 4});
  Tensor t = Tensor::from_vector(std::vector<double>{1, 1, 1, 0}, {1, 4});
  const double expect =
      (std::log(2.0) + std::log1p(std::exp(-100.0)) + 100.0 + std::log1p(std::exp(2.0))) / 4;
  CHECK(bce_with_logits(l, t).item() == doctest::Approx(expect).epsilon(1e-12));
  // pos_weight multiplies the positive term: label 0 weighted 3 -> 3*log 2 for the first element.
  Tensor pw = Tensor::from_vector(std::vector<double>{3, 1, 1, 1}, {4});
  const double expect_pw =
      (3 * std::log(2.0) + std::log1p(std::exp(-100.0)) + 100.0 + std::log1p(std::exp(2.0))) / 4;
  CHECK(bce_with_logits(l, t, pw).item() == doctest::Approx(expect_pw).epsilon(1e-12));
  CHECK(std::isfinite(bce_with_logits(l.to(DType::F32), t.to(DType::F32)).item()));
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  Tensor c = Tensor::from_vector(std::vector<double>{1, 0, 6}, {3});
  CHECK(mse_loss(a, c).item() == doctest::Approx((0 + 4 + 9) / 3.0));
}

TEST_CASE("forward: shape errors name the op and the shapes") {
  Tensor x = Tensor::zeros({1, 4, 4, 3});
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({2, 3, 3, 5})), doctest::Contains("input channels"),
                       rz::Error);
  CHECK_THROWS_WITH_AS(add(x, Tensor::zeros({1, 4, 4, 2})), doctest::Contains("shape mismatch"),
                       rz::Error);
  CHECK_THROWS_WITH_AS(add(x, Tensor::zeros({1, 4, 4, 3}, DType::F64)),
                       doctest::Contains("dtype mismatch"), rz::Error);
  CHECK_THROWS_WITH_AS(bce_with_logits(Tensor::zeros({2, 3}), Tensor::zeros({2, 4})),
                       doctest::Contains("targets"), rz::Error);
  CHECK_THROWS_WITH_AS(relu(Tensor::zeros({2}, DType::I64)), doctest::Contains("unsupported dtype"),
                       rz::Error);
}

TEST_CASE("forward: permute moves elements as the index formula says") {
  Generator gen(4);
  Tensor x = Tensor::uniform({2, 3, 4, 5}, -1, 1, gen, DType::F64);
  Tensor y = permute(x, {0, 2, 3, 1});  // NCHW -> NHWC
  CHECK(y.shape() == Shape{2, 4, 5, 3});
  const double* px = x.data<double>();
  const double* py = y.data<double>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 4; ++h)
        for (int64_t w = 0; w < 5; ++w)
          CHECK(py[((n * 4 + h) * 5 + w) * 3 + c] == px[((n * 3 + c) * 4 + h) * 5 + w]);
  CHECK(permute(y, {0, 3, 1, 2}).to_vector<double>() == x.to_vector<double>());
  CHECK(permute(x.to(DType::BF16), {0, 2, 3, 1}).to(DType::F64).to_vector<double>() ==
        y.to(DType::BF16).to(DType::F64).to_vector<double>());
  CHECK_THROWS_AS(permute(x, {0, 0, 1, 2}), rz::Error);
}

TEST_CASE("conv_bn_act on the CPU in eval: BN and ReLU in the GEMM epilogue give conv2d + batch_norm_act") {

  for (const DType dt : {DType::F64, DType::F32}) {
    for (const bool pointwise : {true, false}) {
      for (const bool relu : {true, false}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(pointwise);
        CAPTURE(relu);
        Generator gen(11);
        const int64_t C = 24, K = 40;
        const Tensor x = Tensor::normal({2, 9, 11, C}, 0, 1, gen).to(dt);
        const Tensor w = Tensor::normal({K, pointwise ? 1 : 3, pointwise ? 1 : 3, C}, 0, 0.2, gen).to(dt);
        const Tensor gamma = Tensor::uniform({K}, 0.5, 1.5, gen).to(dt);
        const Tensor beta = Tensor::uniform({K}, -0.5, 0.5, gen).to(dt);
        const Tensor mean = Tensor::uniform({K}, -0.3, 0.3, gen).to(dt);
        const Tensor var = Tensor::uniform({K}, 0.5, 2.0, gen).to(dt);
        const Conv2dOptions copt{.stride = pointwise ? 1 : 2, .padding = pointwise ? 0 : 1};
        const BatchNormOptions bopt{.training = false, .momentum = 0.1, .eps = 1e-5};
        NoGradGuard no_grad;
        const Tensor fused = conv_bn_act(x, w, copt, Tensor(), gamma, beta, mean, var, bopt, relu);
        const Tensor ref = batch_norm_act(conv2d(x, w, copt), Tensor(), gamma, beta, mean, var, bopt, relu);
        REQUIRE(fused.shape() == ref.shape());
        const auto a = fused.to(DType::F64).to_vector<double>(), b = ref.to(DType::F64).to_vector<double>();
        double worst = 0;
        int64_t zeros = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          worst = std::max(worst, std::abs(a[i] - b[i]));
          if (b[i] == 0) ++zeros;
        }
        CHECK(worst <= (dt == DType::F64 ? 1e-12 : 2e-5));
        CHECK((zeros > 0) == relu);
      }
    }
  }
}
