// The CUDA side of data-parallel training on one GPU: the SyncBN kernels
// (kernels/cuda/sync_bn.cu, through sync_batch_norm2d with the
// single-process communicator) against their CPU twins on odd shapes, in
// fp32 and bf16, and the NCCL communicator at world size 1 (every collective
// the identity, a gradient reducer leaving gradients as they are). Without a
// GPU, or in a build without NCCL, each reports skipped.
#include "tests/gpu/gpu_test.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/comm.h"
#include "engine/ops.h"
#include "models/seresnet.h"
#include "train/data_parallel.h"

using namespace rz;

namespace {

struct BnOut {
  std::vector<float> y, rm, rv, dx, dg, db;
};

// sync_batch_norm2d forward and backward on `dev` (activations in `act`,
// parameters f32), from the same host values.
BnOut run_sync_bn(const Shape& shape, Device dev, DType act, uint64_t seed) {
  Generator gen(seed);
  const int64_t C = shape.back();
  Tensor x = Tensor::normal(shape, 0.3, 1.7, gen).to(act).to(DType::F32);  // rounded once, as the bf16 run sees it
  Tensor dy = Tensor::normal(shape, 0.0, 1.0, gen).to(act).to(DType::F32);
  Tensor g = Tensor::uniform({C}, 0.5, 1.5, gen), b = Tensor::uniform({C}, -0.5, 0.5, gen);
  Tensor xd = x.to(dev).to(dev.is_cuda() ? act : DType::F32), dyd = dy.to(dev).to(dev.is_cuda() ? act : DType::F32);
  Tensor gd = g.to(dev), bd = b.to(dev);
  xd.set_requires_grad(true);
  gd.set_requires_grad(true);
  bd.set_requires_grad(true);
  Tensor rm = Tensor::full({C}, 0.2, DType::F32, dev), rv = Tensor::full({C}, 1.5, DType::F32, dev);
  Tensor y = sync_batch_norm2d(xd, gd, bd, rm, rv, {true, 0.1, 1e-5}, *single_communicator());
  y.backward(dyd);
  auto host = [](const Tensor& t) { return t.to(Device::cpu()).to(DType::F32).to_vector<float>(); };
  return {host(y), host(rm), host(rv), host(xd.grad()), host(gd.grad()), host(bd.grad())};
}

// Normalized mean squared error of got against ref.
double nmse(const std::vector<float>& got, const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return num / den;
}

}  // namespace

TEST_SUITE("gpu") {

TEST_CASE("gpu sync_batch_norm2d: CUDA kernels against the CPU twin (values, running stats, gradients)") {
  RZ_SKIP_WITHOUT_GPU();
  const std::vector<Shape> shapes = {{2, 5, 7, 67}, {3, 1, 1, 3}, {4, 16, 16, 64}, {1, 33, 9, 130}};
  for (const DType act : {DType::F32, DType::BF16}) {
    for (const Shape& s : shapes) {
      CAPTURE(shape_str(s));
      CAPTURE(dtype_name(act));
      const BnOut cpu = run_sync_bn(s, Device::cpu(), act, 5);
      const BnOut gpu = run_sync_bn(s, Device::cuda(0), act, 5);
      // fp32: the sums are double on both sides; bf16 adds one output rounding.
      const double tol = act == DType::F32 ? 1e-10 : 2e-5;
      CHECK(nmse(gpu.y, cpu.y) < tol);
      CHECK(nmse(gpu.rm, cpu.rm) < 1e-12);
      CHECK(nmse(gpu.rv, cpu.rv) < 1e-12);
      CHECK(nmse(gpu.dx, cpu.dx) < tol);
      CHECK(nmse(gpu.dg, cpu.dg) < 1e-10);
      CHECK(nmse(gpu.db, cpu.db) < 1e-10);
    }
  }
}

TEST_CASE("gpu nccl: at world size 1 every collective is the identity and the reducer keeps gradients") {
  RZ_SKIP_WITHOUT_GPU();
  if (!nccl_built()) RZ_SKIP_TEST("this build has no NCCL");
  auto comm = nccl_communicator(0, 60.0);
  CHECK(comm->world_size() == 1);
  CHECK(comm->name() == "nccl");
  Generator gen(9);
  for (const DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const Tensor host = Tensor::normal({1001}, 0, 1, gen).to(dt);
    Tensor t = host.to(Device::cuda(0));
    comm->all_reduce_sum(t);
    CHECK(t.to(Device::cpu()).to(DType::F64).to_vector<double>() == host.to(DType::F64).to_vector<double>());
    comm->broadcast(t, 0);
    const Tensor g = comm->all_gather(t);
    CHECK(g.shape() == Shape({1, 1001}));
    CHECK(g.to(Device::cpu()).to(DType::F64).to_vector<double>() == host.to(DType::F64).to_vector<double>());
  }
  double v[3] = {1.5, -2.0, 7.25};
  comm->all_reduce_sum(v, 3);
  CHECK(v[2] == 7.25);
  comm->barrier();

  // A backward with the reducer on NCCL: the gradients of one process.
  auto model = create_resnet(resnet_config("seresnet_tiny"), 3);
  model->to(Device::cuda(0));
  const Tensor x = Tensor::normal({2, 32, 32, 3}, 0, 1, gen).to(Device::cuda(0));
  const Tensor y = Tensor::zeros({2, 1000}, DType::F32, Device::cuda(0));
  bce_with_logits(model->forward(x), y).backward();
  std::vector<std::vector<float>> plain;
  for (const Tensor& p : model->parameters()) plain.push_back(p.grad().to(Device::cpu()).to_vector<float>());
  for (const Tensor& p : model->parameters()) Tensor(p).zero_grad();
  GradientReducer reducer(comm, model->parameters(), ReducerOptions{.bucket_mb = 0.01});
  reducer.begin_backward(true);
  bce_with_logits(model->forward(x), y).backward();
  CHECK(reducer.started_in_backward() > 0);
  reducer.finish();
  const auto params = model->parameters();
  for (size_t k = 0; k < params.size(); ++k) {
    const auto got = params[k].grad().to(Device::cpu()).to_vector<float>();
    CHECK(nmse(got, plain[k]) < 1e-10);
  }
}

}  // TEST_SUITE("gpu")
