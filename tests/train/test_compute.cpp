// Device and precision resolution (train/compute.h) and the CUDA entry points'
// errors on a machine without a GPU.
#include <doctest/doctest.h>

#include "engine/cuda_graph.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "tests/skip.h"
#include "train/compute.h"

using namespace rz;

TEST_CASE("resolve_compute: cpu fp32, auto without a GPU, bf16 needs CUDA") {
  const Compute c = resolve_compute("cpu", "fp32");
  CHECK(c.device.is_cpu());
  CHECK(c.activations == DType::F32);
  CHECK(c.str() == "cpu, fp32");
  CHECK_THROWS_WITH_AS(resolve_compute("cpu", "bf16"), doctest::Contains("needs a CUDA device"), Error);
  CHECK_THROWS_WITH_AS(resolve_compute("cpu", "fp16"), doctest::Contains("fp32 or bf16"), Error);
  CHECK_THROWS_WITH_AS(resolve_compute("tpu", "fp32"), doctest::Contains("tpu"), Error);
  if (cuda_device_count() == 0) {
    CHECK(resolve_compute("auto", "fp32").device.is_cpu());
    CHECK_THROWS_AS(resolve_compute("cuda", "fp32"), Error);
  }
}

TEST_CASE("to_compute and host_floats keep values on the CPU path") {
  const Tensor h = Tensor::from_vector<float>({1.5f, -2.0f, 3.25f}, {3});
  const Compute c = resolve_compute("cpu", "fp32");
  const Tensor t = to_compute(h, c);
  CHECK(t.device().is_cpu());
  CHECK(host_floats(t) == std::vector<float>{1.5f, -2.0f, 3.25f});
  // bf16 values come back exactly as rounded (3.25 and 1.5 are representable).
  CHECK(host_floats(h.to(DType::BF16)) == std::vector<float>{1.5f, -2.0f, 3.25f});
}

TEST_CASE("cast is differentiable: the gradient returns in the source dtype") {
  Tensor x = Tensor::from_vector<double>({0.1, 0.2, 0.3}, {3});
  x.set_requires_grad(true);
  const Tensor y = cast(x, DType::F32);
  CHECK(y.dtype() == DType::F32);
  CHECK(cast(y, DType::F32).impl_ptr() == y.impl_ptr());  // same dtype: the input itself
  sum(scale(y, 2.0)).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == DType::F64);
  for (double g : x.grad().to_vector<double>()) CHECK(g == 2.0);
}

TEST_CASE("mixed dtypes are rejected on the CPU with the op's name") {
  const Tensor x = Tensor::ones({1, 4, 4, 3});
  const Tensor w = Tensor::ones({2, 3, 3, 3}, DType::F64);
  CHECK_THROWS_WITH_AS(conv2d(x, w), doctest::Contains("conv2d: dtype mismatch"), Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::ones({2, 3}), Tensor::ones({4, 3}, DType::F64), Tensor()),
                       doctest::Contains("linear: dtype mismatch"), Error);
}

TEST_CASE("CudaGraph without a GPU fails with a clear error") {
  if (cuda_device_count() > 0) RZ_SKIP_TEST("a CUDA device is present; the gpu suite tests CudaGraph");
  CudaGraph g;
  CHECK_FALSE(g.ready());
  CHECK(g.node_count() == 0);
  CHECK_THROWS_AS(g.begin_capture(0), Error);
  CHECK_THROWS_WITH_AS(g.replay(), doctest::Contains("CudaGraph"), Error);
}

TEST_CASE("optimizer graph mode refuses CPU parameters and steps it cannot stage") {
  Tensor p = Tensor::ones({3});
  p.set_requires_grad(true);
  Adam adam({p}, AdamHyper{});
  CHECK_FALSE(adam.graph_mode());
  CHECK_THROWS_WITH_AS(adam.enter_graph_mode(), doctest::Contains("graph mode"), Error);
  CHECK_FALSE(adam.graph_mode());
  CHECK_THROWS_WITH_AS(adam.stage_graph_step(), doctest::Contains("graph mode"), Error);
  Sgd sgd({p}, SgdHyper{.lr = 0.1, .momentum = 0.9});
  CHECK_THROWS_WITH_AS(sgd.stage_graph_step(), doctest::Contains("graph mode"), Error);
  CHECK_THROWS_WITH_AS(adam.unstage_graph_step(), doctest::Contains("graph mode"), Error);
  CHECK_THROWS_WITH_AS(adam.set_graph_gate(Tensor::zeros({})), doctest::Contains("graph mode"), Error);
}
