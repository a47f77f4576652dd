// The program tests/dist/test_data_parallel.cpp runs under `mpirun -np 2`:
//   rz_mpi_worker <scenario> [args]
// Every rank runs the scenario and checks its own results; the exit status
// is 0 when every check held on this rank (mpirun then exits 0 when all
// ranks did). Each failed check prints one line naming the rank and values.
// References are computed on each rank by a single process (the same code
// with the single-process communicator), never taken from the distributed
// result itself.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "engine/autograd.h"
#include "engine/comm.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "models/seresnet.h"
#include "train/data_parallel.h"

namespace {

using namespace rz;

int g_rank = 0;
int g_failures = 0;

#define EXPECT(cond, ...)                                                                               \
  do {                                                                                                  \
    if (!(cond)) {                                                                                      \
      ++g_failures;                                                                                     \
      std::fprintf(stderr, "rank %d: check failed (line %d): %s: %s\n", g_rank, __LINE__, #cond,      \
                   ::rz::detail::concat(__VA_ARGS__).c_str());                                          \
    }                                                                                                   \
  } while (0)

std::vector<double> as_doubles(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).to(DType::F64);
  return h.to_vector<double>();
}

// ---- collectives ----

void collectives(Communicator& comm) {
  const int W = comm.world_size(), r = comm.rank();
  EXPECT(W == 2, "world size ", W);
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    // Small integers and halves: exact in every dtype, so the sums are too.
    std::vector<double> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>((i % 7) + r) * 0.5;
    Tensor t = Tensor::from_vector(v, {1000}).to(dt);
    comm.all_reduce_sum(t);
    const auto got = as_doubles(t);
    for (size_t i = 0; i < v.size(); ++i) {
      double want = 0;
      for (int q = 0; q < W; ++q) want += static_cast<double>((i % 7) + q) * 0.5;
      EXPECT(got[i] == want, dtype_name(dt), " all-reduce element ", i, ": ", got[i], " != ", want);
    }
  }
  // Two reductions in flight, waited in the reverse order.
  Tensor a = Tensor::full({64}, r + 1.0), b = Tensor::full({64}, 10.0 * (r + 1));
  auto wa = comm.start_all_reduce_sum(a);
  auto wb = comm.start_all_reduce_sum(b);
  wb->wait();
  wa->wait();
  EXPECT(a.to_vector<float>()[5] == 3.0f && b.to_vector<float>()[63] == 30.0f, "overlapped all-reduces: ",
         a.to_vector<float>()[5], ", ", b.to_vector<float>()[63]);
  Tensor bc = Tensor::full({5}, r == 1 ? 7.0 : 0.0, DType::F64);
  comm.broadcast(bc, 1);
  EXPECT(bc.to_vector<double>()[4] == 7.0, "broadcast from rank 1: ", bc.to_vector<double>()[4]);
  std::vector<float> mine{static_cast<float>(10 * r), static_cast<float>(10 * r + 1), static_cast<float>(10 * r + 2)};
  const Tensor all = comm.all_gather(Tensor::from_vector(mine, {3}));
  EXPECT(all.shape() == Shape({2, 3}), "all-gather shape ", shape_str(all.shape()));
  const auto g = all.to_vector<float>();
  for (int q = 0; q < W; ++q)
    for (int i = 0; i < 3; ++i)
      EXPECT(g[static_cast<size_t>(q * 3 + i)] == static_cast<float>(10 * q + i), "all-gather [", q, ", ", i, "]");
  double host[2] = {1.0 + r, 0.25};
  comm.all_reduce_sum(host, 2);
  EXPECT(host[0] == 3.0 && host[1] == 0.5, "host all-reduce ", host[0], ", ", host[1]);
  comm.barrier();
  // The loader's eval shard, reassembled: rows r, r + W, ... of 7.
  std::vector<float> rows;
  for (int64_t j = r; j < 7; j += W) rows.insert(rows.end(), {static_cast<float>(j), -static_cast<float>(j)});
  const auto whole = gather_sharded_rows(comm, rows, 7, 2);
  for (int64_t j = 0; j < 7; ++j)
    EXPECT(whole[static_cast<size_t>(2 * j)] == static_cast<float>(j) &&
               whole[static_cast<size_t>(2 * j + 1)] == -static_cast<float>(j),
           "gathered row ", j);
}

// ---- training equivalence ----

ResNetConfig tiny_config() {
  ResNetConfig c = resnet_config("seresnet_tiny");
  c.num_classes = 11;
  c.in_chans = 3;
  return c;
}

struct Batches {
  std::vector<Tensor> x, y;
};

// The same data on every rank: `steps` batches of B images.
Batches make_batches(int steps, int64_t B, DType dt) {
  Generator gen(2024);
  Batches b;
  for (int s = 0; s < steps; ++s) {
    b.x.push_back(Tensor::normal({B, 32, 32, 3}, 0.0, 1.0, gen, dt));
    Tensor y = Tensor::uniform({B, 11}, 0.0, 1.0, gen, DType::F64);
    std::vector<double> v = y.to_vector<double>();
    for (double& e : v) e = e < 0.3 ? 1.0 : 0.0;
    b.y.push_back(Tensor::from_vector(v, {B, 11}).to(dt));
  }
  return b;
}

std::shared_ptr<ResNet> make_model(DType dt) {
  auto m = create_resnet(tiny_config(), 7);
  m->to(dt);
  m->train();
  return m;
}

std::unique_ptr<Optimizer> make_sgd(const ResNet& m) {
  return std::make_unique<Sgd>(m.parameters(), SgdHyper{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
}

// One optimizer step on (x, y), with the step's gradient synchronization
// when given (what train/train_step.cpp does around backward); returns the
// loss (averaged over the ranks when synchronized).
double train_step(ResNet& m, Optimizer& opt, GradientSync* sync, const Tensor& x, const Tensor& y) {
  Tensor loss = bce_with_logits(m.forward(x), y);
  double lv = loss.item();
  if (sync) sync->average(&lv, 1);
  if (sync) sync->begin_backward(true);
  loss.backward();
  if (sync) sync->finish();
  opt.step();
  opt.zero_grad();
  return lv;
}

// Largest |a - b| / max(1, |b|) over two models' state (parameters and buffers).
double state_diff(const ResNet& a, const ResNet& b, std::string* where) {
  const auto sa = a.state_dict(), sb = b.state_dict();
  double worst = 0;
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].second.dtype() == DType::I64) continue;
    const auto va = as_doubles(sa[i].second), vb = as_doubles(sb[i].second);
    for (size_t k = 0; k < va.size(); ++k) {
      const double d = std::fabs(va[k] - vb[k]) / std::max(1.0, std::fabs(vb[k]));
      if (d > worst) {
        worst = d;
        *where = sa[i].first;
      }
    }
  }
  return worst;
}

// SyncBN on: the ranks at batch B/W each give the losses and weights of one
// process at batch B. Off: each rank matches a single-process model that
// saw only that rank's shard, with the gradients averaged over the shards.
void equivalence(const std::shared_ptr<Communicator>& comm, DType dt, bool sync_bn, double tol) {
  const int W = comm->world_size(), r = comm->rank();
  const int steps = 4;
  const int64_t b = 4, B = b * W;
  const Batches data = make_batches(steps, B, dt);
  auto shard = [&](const Tensor& t, int q) { return t.narrow0(q * b, b).clone(); };

  // The distributed run.
  auto model = make_model(dt);
  if (sync_bn) set_sync_batch_norm(*model, comm);
  auto opt = make_sgd(*model);
  GradientReducer reducer(comm, model->parameters(), ReducerOptions{.bucket_mb = 0.05});
  EXPECT(reducer.bucket_count() > 1, "expected several buckets, got ", reducer.bucket_count());
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s)
    losses.push_back(train_step(*model, *opt, &reducer, shard(data.x[static_cast<size_t>(s)], r),
                                shard(data.y[static_cast<size_t>(s)], r)));
  EXPECT(reducer.started_in_backward() > 0, "no bucket's all-reduce started during backward");

  // The single-process reference, computed here on this rank.
  std::string where;
  if (sync_bn) {
    auto ref = make_model(dt);
    auto ref_opt = make_sgd(*ref);
    for (int s = 0; s < steps; ++s) {
      const double lv = train_step(*ref, *ref_opt, nullptr, data.x[static_cast<size_t>(s)], data.y[static_cast<size_t>(s)]);
      const double d = std::fabs(lv - losses[static_cast<size_t>(s)]) / std::fabs(lv);
      EXPECT(d <= tol, "step ", s, " loss ", losses[static_cast<size_t>(s)], " vs one process ", lv, " (rel ", d, ")");
    }
    const double d = state_diff(*model, *ref, &where);
    std::printf("rank %d: sync_bn %s: weights and running statistics within %.3g of one process at batch %lld (%s)\n",
                r, dtype_name(dt), d, static_cast<long long>(B), where.c_str());
    EXPECT(d <= tol, "state differs from one process by ", d, " at ", where);
  } else {
    std::vector<std::shared_ptr<ResNet>> refs;
    std::vector<std::unique_ptr<Optimizer>> ref_opts;
    for (int q = 0; q < W; ++q) {
      refs.push_back(make_model(dt));
      ref_opts.push_back(make_sgd(*refs.back()));
    }
    for (int s = 0; s < steps; ++s) {
      double loss_sum = 0;
      std::vector<std::vector<Tensor>> grads(static_cast<size_t>(W));
      for (int q = 0; q < W; ++q) {
        ResNet& m = *refs[static_cast<size_t>(q)];
        Tensor loss = bce_with_logits(m.forward(shard(data.x[static_cast<size_t>(s)], q)),
                                      shard(data.y[static_cast<size_t>(s)], q));
        loss_sum += loss.item();
        loss.backward();
        for (const Tensor& p : m.parameters()) grads[static_cast<size_t>(q)].push_back(p.grad().clone());
      }
      for (int q = 0; q < W; ++q) {
        const auto params = refs[static_cast<size_t>(q)]->parameters();
        for (size_t k = 0; k < params.size(); ++k) {
          Tensor g = params[k].grad();
          g.fill_(0.0);
          for (int o = 0; o < W; ++o) g.add_(grads[static_cast<size_t>(o)][k], 1.0 / W);
        }
        ref_opts[static_cast<size_t>(q)]->step();
        ref_opts[static_cast<size_t>(q)]->zero_grad();
      }
      const double lv = loss_sum / W;
      const double d = std::fabs(lv - losses[static_cast<size_t>(s)]) / std::fabs(lv);
      EXPECT(d <= tol, "step ", s, " loss ", losses[static_cast<size_t>(s)], " vs per-shard reference ", lv);
    }
    const double d = state_diff(*model, *refs[static_cast<size_t>(r)], &where);
    std::printf("rank %d: per-shard BN %s: state within %.3g of the per-shard reference (%s)\n", r, dtype_name(dt), d,
                where.c_str());
    EXPECT(d <= tol, "state differs from the per-shard reference by ", d, " at ", where);
  }
}

// ---- buckets ----

// The bucketed, overlapped reduction equals reducing every gradient on its
// own (bitwise: each element is the same sum either way).
void buckets(const std::shared_ptr<Communicator>& comm, DType wire) {
  const int r = comm->rank();
  auto model = make_model(DType::F32);
  const auto params = model->parameters();
  Generator gen(100 + static_cast<uint64_t>(r));  // different gradients on each rank
  std::vector<Tensor> flat_ref;
  for (const Tensor& p : params) {
    Tensor g = Tensor::normal(p.shape(), 0.0, 1.0, gen);
    Tensor(p).set_grad(g.clone());
    Tensor ref = g.to(wire);
    comm->all_reduce_sum(ref);
    Tensor back = ref.to(DType::F32);
    back.mul_(1.0 / comm->world_size());
    flat_ref.push_back(back);
  }
  for (double mb : {0.002, 25.0}) {
    for (size_t k = 0; k < params.size(); ++k) Tensor(params[k]).set_grad(Tensor());
    Generator again(100 + static_cast<uint64_t>(r));
    for (const Tensor& p : params) Tensor(p).set_grad(Tensor::normal(p.shape(), 0.0, 1.0, again));
    GradientReducer reducer(comm, params, ReducerOptions{.bucket_mb = mb, .reduce_dtype = wire});
    reducer.begin_backward(true);
    // Gradients become ready in reverse order, as backward produces them.
    for (size_t k = params.size(); k-- > 0;) params[k].impl().grad_ready();
    EXPECT(reducer.started_in_backward() == reducer.bucket_count(), "buckets started from hooks: ",
           reducer.started_in_backward(), " of ", reducer.bucket_count());
    reducer.finish();
    for (size_t k = 0; k < params.size(); ++k) {
      const auto a = params[k].grad().to_vector<float>(), b = flat_ref[k].to_vector<float>();
      EXPECT(a == b, dtype_name(wire), " bucket ", mb, " MB: parameter ", k, " differs from the flat reduction");
    }
    if (mb < 1) EXPECT(reducer.bucket_count() > 3, "expected many buckets, got ", reducer.bucket_count());
    if (mb > 1) EXPECT(reducer.bucket_count() == 1, "expected one bucket, got ", reducer.bucket_count());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: rz_mpi_worker <scenario>\n");
    return 2;
  }
  const std::string scenario = argv[1];
  try {
    const double timeout = scenario == "timeout" ? 2.0 : 120.0;
    auto comm = rz::mpi_communicator(timeout);
    g_rank = comm->rank();
    if (scenario == "collectives") {
      collectives(*comm);
    } else if (scenario == "syncbn-f64") {
      equivalence(comm, rz::DType::F64, true, 1e-12);
    } else if (scenario == "syncbn-f32") {
      equivalence(comm, rz::DType::F32, true, 1e-5);
    } else if (scenario == "shardbn-f64") {
      equivalence(comm, rz::DType::F64, false, 1e-12);
    } else if (scenario == "buckets") {
      buckets(comm, rz::DType::F32);
      buckets(comm, rz::DType::BF16);
    } else if (scenario == "timeout") {
      // Rank 1 stalls past rank 0's timeout: rank 0 must end the job.
      if (g_rank == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
      comm->barrier();
    } else if (scenario == "failure") {
      // Rank 1 fails while rank 0 waits in a collective.
      if (g_rank == 1) RZ_THROW("rank 1 cannot read its shard (simulated failure)");
      comm->barrier();
    } else {
      std::fprintf(stderr, "rz_mpi_worker: unknown scenario '%s'\n", scenario.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rz_mpi_worker: error (rank %d): %s\n", g_rank, e.what());
    std::fflush(stderr);
    rz::abort_job(1);
    return 1;
  }
  if (g_failures == 0) std::printf("rank %d: %s passed\n", g_rank, scenario.c_str());
  return g_failures == 0 ? 0 : 1;
}
