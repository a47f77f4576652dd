// Data-parallel training: the pieces on one process (SyncBN against batch
// norm and finite differences, the loader's shards, the launcher
// environment), and, under `mpirun -np 2` on this machine (loopback only),
// the MPI collectives, the bucketed reduction, the training equivalences
// (tests/dist/mpi_worker.cpp) and whole `ranzcr train` runs. Without MPI in
// the build, or without OpenMPI's mpirun, the MPI tests report skipped.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <set>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/comm.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "tests/data/temp_dir.h"
#include "tests/engine/gradcheck.h"
#include "tests/run_command.h"
#include "tests/skip.h"
#include "tests/train/tiny_run.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data_parallel.h"

namespace fs = std::filesystem;
using rz::DType;
using rz::Tensor;

namespace {

// ---- one process ----

// Sets environment variables for the scope, restoring them after.
class EnvScope {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvScope() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// No launcher variables at all.
void clear_launcher_env(EnvScope& env) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_SIZE",
                        "PMI_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID",
                        "SLURM_LOCALID"})
    env.set(v, nullptr);
}

}  // namespace

TEST_CASE("dist env: rank, world size and local rank from OpenMPI, PMI or SLURM; malformed values are errors") {
  EnvScope env;
  clear_launcher_env(env);
  rz::DistEnv e = rz::detect_dist_env();
  CHECK(e.world_size == 1);
  CHECK(e.rank == 0);
  CHECK(e.launcher.empty());

  env.set("SLURM_NTASKS", "16");
  env.set("SLURM_PROCID", "9");
  env.set("SLURM_LOCALID", "1");
  e = rz::detect_dist_env();
  CHECK(e.launcher == "slurm");
  CHECK(e.world_size == 16);
  CHECK(e.rank == 9);
  CHECK(e.local_rank == 1);

  // mpirun's variables win over the allocation's (srun inside mpirun).
  env.set("OMPI_COMM_WORLD_SIZE", "4");
  env.set("OMPI_COMM_WORLD_RANK", "3");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "3");
  e = rz::detect_dist_env();
  CHECK(e.launcher == "openmpi");
  CHECK(e.world_size == 4);
  CHECK(e.rank == 3);

  env.set("OMPI_COMM_WORLD_RANK", "4");
  CHECK_THROWS_WITH_AS(rz::detect_dist_env(), doctest::Contains("inconsistent"), rz::Error);
  env.set("OMPI_COMM_WORLD_RANK", "two");
  CHECK_THROWS_WITH_AS(rz::detect_dist_env(), doctest::Contains("OMPI_COMM_WORLD_RANK = 'two'"), rz::Error);
}

TEST_CASE("dist: the single-process communicator leaves tensors alone and gathers one row") {
  auto c = rz::single_communicator();
  CHECK(c->world_size() == 1);
  Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  c->all_reduce_sum(t);
  CHECK(t.to_vector<float>() == std::vector<float>{1, 2, 3});
  const Tensor g = c->all_gather(t);
  CHECK(g.shape() == rz::Shape({1, 3}));
  double v[2] = {1.5, -2};
  c->all_reduce_sum(v, 2);
  CHECK(v[0] == 1.5);
  CHECK(rz::gather_sharded_rows(*c, {1, 2, 3, 4}, 2, 2) == std::vector<float>{1, 2, 3, 4});
  CHECK_THROWS_WITH_AS(rz::gather_sharded_rows(*c, {1, 2, 3}, 2, 2), doctest::Contains("holds 3 values"), rz::Error);
}

TEST_CASE("sync_batch_norm2d: on one process, the values, running statistics and gradients of batch_norm2d") {
  rz::Generator gen(3);
  const int64_t C = 5;
  const Tensor x0 = Tensor::normal({3, 4, 2, C}, 0.7, 1.3, gen, DType::F64);
  const Tensor g0 = Tensor::uniform({C}, 0.5, 1.5, gen, DType::F64);
  const Tensor b0 = Tensor::uniform({C}, -0.5, 0.5, gen, DType::F64);
  const Tensor dy = Tensor::normal({3, 4, 2, C}, 0, 1, gen, DType::F64);
  auto comm = rz::single_communicator();
  struct Out {
    std::vector<double> y, rm, rv, dx, dg, db;
  };
  auto run = [&](bool sync) {
    Tensor x = x0.clone(), g = g0.clone(), b = b0.clone();
    x.set_requires_grad(true);
    g.set_requires_grad(true);
    b.set_requires_grad(true);
    Tensor rm = Tensor::full({C}, 0.1, DType::F64), rv = Tensor::full({C}, 2.0, DType::F64);
    const rz::BatchNormOptions opt{true, 0.1, 1e-5};
    Tensor y = sync ? rz::sync_batch_norm2d(x, g, b, rm, rv, opt, *comm) : rz::batch_norm2d(x, g, b, rm, rv, opt);
    rz::sum(rz::mul(y, dy)).backward();
    return Out{y.to_vector<double>(), rm.to_vector<double>(), rv.to_vector<double>(),
               x.grad().to_vector<double>(), g.grad().to_vector<double>(), b.grad().to_vector<double>()};
  };
  const Out a = run(true), e = run(false);
  auto close = [](const std::vector<double>& p, const std::vector<double>& q) {
    REQUIRE(p.size() == q.size());
    double worst = 0;
    for (size_t i = 0; i < p.size(); ++i) worst = std::max(worst, std::fabs(p[i] - q[i]));
    return worst;
  };
  CHECK(close(a.y, e.y) < 1e-13);
  CHECK(close(a.rm, e.rm) < 1e-14);
  CHECK(close(a.rv, e.rv) < 1e-13);
  CHECK(close(a.dx, e.dx) < 1e-13);
  CHECK(close(a.dg, e.dg) < 1e-13);
  CHECK(close(a.db, e.db) < 1e-13);
  // The running variance is the unbiased one: 24 rows, factor 24/23.
  double mean0 = 0, var0 = 0;
  const auto xv = x0.to_vector<double>();
  for (int64_t r = 0; r < 24; ++r) mean0 += xv[static_cast<size_t>(r * C)] / 24;
  for (int64_t r = 0; r < 24; ++r) var0 += std::pow(xv[static_cast<size_t>(r * C)] - mean0, 2) / 24;
  CHECK(a.rv[0] == doctest::Approx(0.9 * 2.0 + 0.1 * var0 * 24 / 23).epsilon(1e-12));
  CHECK(a.rm[0] == doctest::Approx(0.9 * 0.1 + 0.1 * mean0).epsilon(1e-12));
}

TEST_CASE("sync_batch_norm2d: gradients match finite differences (double)") {
  rz::Generator gen(11);
  auto comm = rz::single_communicator();
  rz::test::gradcheck(
      "sync_batch_norm2d",
      [&](const std::vector<Tensor>& in) {
        return rz::sync_batch_norm2d(in[0], in[1], in[2], Tensor(), Tensor(), {true, 0.1, 1e-5}, *comm);
      },
      {rz::test::rand_f64({2, 3, 3, 4}, gen), rz::test::rand_f64({4}, gen, 0.5, 1.5),
       rz::test::rand_f64({4}, gen)});
}

TEST_CASE("dist config: sync_bn refuses the fused BN ops; reduce dtype, bucket size and timeout are checked") {
  rz::TrainConfig c;
  c.model.sync_bn = true;
  c.model.fused_se = true;
  CHECK_THROWS_WITH_AS(rz::validate_config(c), doctest::Contains("model.sync_bn needs"), rz::Error);
  c.model.fused_se = false;
  CHECK_NOTHROW(rz::validate_config(c));
  c.dist.reduce_dtype = "fp16";
  CHECK_THROWS_WITH_AS(rz::validate_config(c), doctest::Contains("dist.reduce_dtype"), rz::Error);
  c.dist.reduce_dtype = "bf16";
  c.dist.bucket_mb = 0;
  CHECK_THROWS_WITH_AS(rz::validate_config(c), doctest::Contains("dist.bucket_mb"), rz::Error);
  c.dist.bucket_mb = 25;
  c.dist.timeout_s = -1;
  CHECK_THROWS_WITH_AS(rz::validate_config(c), doctest::Contains("dist.timeout_s"), rz::Error);
}

TEST_CASE("loader shards: the ranks' batch b together is batch b of one process at the whole batch, same pixels") {
  const int64_t n = 37, b = 3, W = 3;
  std::vector<int64_t> samples(n);
  for (int64_t i = 0; i < n; ++i) samples[static_cast<size_t>(i)] = 100 + i;
  // The sample's value and its Generator's first draw, as pixels.
  auto transform = [](int64_t idx, rz::Generator& rng, float* out, float*) {
    out[0] = static_cast<float>(idx);
    out[1] = static_cast<float>(rng.below(1000000));
  };
  rz::data::LoaderOptions one{.batch = b * W, .shuffle = true, .drop_last = true, .seed = 5, .workers = 2};
  rz::data::Loader whole(samples, one, {1, 2, 1}, transform);
  std::vector<std::unique_ptr<rz::data::Loader>> ranks;
  for (int r = 0; r < W; ++r) {
    rz::data::LoaderOptions o = one;
    o.batch = b;
    o.shard_rank = r;
    o.shard_count = static_cast<int>(W);
    ranks.push_back(std::make_unique<rz::data::Loader>(samples, o, rz::data::SampleShape{1, 2, 1}, transform));
    CHECK(ranks.back()->batches_per_epoch() == whole.batches_per_epoch());
  }
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    whole.start_epoch(epoch);
    for (auto& l : ranks) l->start_epoch(epoch);
    int64_t batches = 0;
    while (auto wb = whole.next()) {
      std::multiset<std::pair<float, float>> expect, got;
      const auto wv = wb->images.to_vector<float>();
      for (size_t i = 0; i < wv.size(); i += 2) expect.insert({wv[i], wv[i + 1]});
      for (auto& l : ranks) {
        auto rb = l->next();
        REQUIRE(rb.has_value());
        const auto rv = rb->images.to_vector<float>();
        for (size_t i = 0; i < rv.size(); i += 2) got.insert({rv[i], rv[i + 1]});
      }
      CHECK(got == expect);
      ++batches;
    }
    CHECK(batches == n / (b * W));
    for (auto& l : ranks) CHECK_FALSE(l->next().has_value());
  }
  // Without drop_last: every sample once over the ranks, the tail neither
  // padded nor dropped.
  std::multiset<int64_t> seen;
  for (int r = 0; r < W; ++r) {
    rz::data::LoaderOptions o{.batch = 4, .shuffle = false, .drop_last = false, .workers = 1};
    o.shard_rank = r;
    o.shard_count = static_cast<int>(W);
    rz::data::Loader l(samples, o, {1, 2, 1}, transform);
    CHECK(l.size() == (n - r + W - 1) / W);
    l.start_epoch(0);
    while (auto bt = l.next())
      for (int64_t i : bt->indices) seen.insert(i);
  }
  CHECK(seen.size() == static_cast<size_t>(n));
  CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == static_cast<size_t>(n));
  rz::data::LoaderOptions bad{.batch = 4};
  bad.shard_rank = 2;
  bad.shard_count = 2;
  CHECK_THROWS_WITH_AS(rz::data::Loader(samples, bad, {1, 2, 1}, transform), doctest::Contains("shard 2 of 2"),
                       rz::Error);
}

TEST_CASE("gradient reducer: buckets of about the asked size, in reverse order, every parameter once") {
  auto model = rz::create_resnet(rz::resnet_config("seresnet_tiny"), 1);
  const auto params = model->parameters();
  rz::GradientReducer reducer(rz::single_communicator(), params, rz::ReducerOptions{.bucket_mb = 0.01});
  const auto layout = reducer.bucket_layout();
  CHECK(layout.size() > 3);
  std::vector<size_t> order;
  for (const auto& b : layout) {
    int64_t bytes = 0;
    for (size_t k : b) bytes += params[k].numel() * 4;
    // A bucket closes before it passes the size, unless one parameter alone does.
    CHECK((bytes <= static_cast<int64_t>(0.01 * 1024 * 1024) || b.size() == 1));
    order.insert(order.end(), b.begin(), b.end());
  }
  REQUIRE(order.size() == params.size());
  for (size_t i = 0; i < order.size(); ++i) CHECK(order[i] == params.size() - 1 - i);
}

// ---- under mpirun ----

namespace {

// The mpirun prefix for `np` local ranks (np = 0: ending in "-np ", for an
// MPMD launch), or "" (with the reason in *why) when this build or machine
// cannot launch them.
std::string mpirun(int np, std::string* why) {
#if defined(RZ_MPI_WORKER_PATH)
  const auto v = rz::test::run_command(std::string(RZ_MPIEXEC) + " --version");
  if (v.status != 0 || (v.text.find("Open MPI") == std::string::npos && v.text.find("OpenRTE") == std::string::npos)) {
    *why = "no OpenMPI mpirun (" + std::string(RZ_MPIEXEC) + "): install openmpi-bin";
    return "";
  }
  std::string m = RZ_MPIEXEC;
  if (::geteuid() == 0) m += " --allow-run-as-root";
  // Loopback only: shared memory between the local ranks, one OpenMP
  // thread each (the ranks share this machine's cores).
  m += " --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS=1";
#if defined(__SANITIZE_ADDRESS__)
  // Under ASan the ranks unwind fully on malloc, so that Open MPI's own
  // leaks reach the MPI_Init frames that tests/sanitize/lsan.supp names
  // (its plugins have no frame pointers).
  const char* asan = std::getenv("ASAN_OPTIONS");
  m += " -x ASAN_OPTIONS=" + std::string(asan != nullptr && *asan != '\0' ? std::string(asan) + ":" : "") +
       "fast_unwind_on_malloc=0";
#endif
  m += " -np ";
  return np > 0 ? m + std::to_string(np) + " " : m;
#else
  (void)np;
  *why = "this build has no MPI (install libopenmpi-dev and rebuild)";
  return "";
#endif
}

#if defined(RZ_MPI_WORKER_PATH)
rz::test::CommandOutput worker(const std::string& prefix, const std::string& scenario) {
  return rz::test::run_command(prefix + RZ_MPI_WORKER_PATH + " " + scenario);
}
#endif

}  // namespace

TEST_CASE("mpi: all-reduce (f32, f64, bf16, overlapped), broadcast, all-gather, barrier over 2 ranks") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
#if defined(RZ_MPI_WORKER_PATH)
  const auto o = worker(m, "collectives");
  CHECK_MESSAGE(o.status == 0, o.text);
  CHECK(o.text.find("rank 1: collectives passed") != std::string::npos);
#endif
}

TEST_CASE("mpi: the bucketed, overlapped gradient reduction equals a flat one, in f32 and bf16") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
#if defined(RZ_MPI_WORKER_PATH)
  const auto o = worker(m, "buckets");
  CHECK_MESSAGE(o.status == 0, o.text);
#endif
}

TEST_CASE("mpi: with SyncBN, 2 ranks at batch B/2 give the losses and weights of 1 process at batch B") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
#if defined(RZ_MPI_WORKER_PATH)
  for (const char* s : {"syncbn-f64", "syncbn-f32"}) {
    const auto o = worker(m, s);
    CHECK_MESSAGE(o.status == 0, s, ": ", o.text);
    MESSAGE(o.text);
  }
#endif
}

TEST_CASE("mpi: without SyncBN, 2 ranks match one process training each shard with its own batch statistics") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
#if defined(RZ_MPI_WORKER_PATH)
  const auto o = worker(m, "shardbn-f64");
  CHECK_MESSAGE(o.status == 0, o.text);
#endif
}

TEST_CASE("mpi: a rank that fails or stalls ends the job with a clear error, never a hang") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
#if defined(RZ_MPI_WORKER_PATH)
  const auto t0 = std::chrono::steady_clock::now();
  const auto failed = worker(m, "failure");
  CHECK(failed.status != 0);
  CHECK_MESSAGE(failed.text.find("rank 1 cannot read its shard") != std::string::npos, failed.text);
  // Rank 1 sleeps 60 s; rank 0 gives up after its 2 s timeout and aborts the job.
  const auto stalled = worker(m, "timeout");
  CHECK(stalled.status != 0);
  CHECK_MESSAGE(stalled.text.find("barrier did not complete within 2 s on rank 0 of 2") != std::string::npos,
                stalled.text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK_MESSAGE(s < 45.0, "the job took ", s, " s to end");
#endif
}

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> metrics_lines(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

double weights_diff(const fs::path& a, const fs::path& b) {
  const auto wa = rz::read_model_weights(a.string()), wb = rz::read_model_weights(b.string());
  REQUIRE(wa.size() == wb.size());
  double worst = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    REQUIRE(wa[i].first == wb[i].first);
    if (wa[i].second.dtype() != DType::F32) continue;
    const auto va = wa[i].second.to_vector<float>(), vb = wb[i].second.to_vector<float>();
    for (size_t k = 0; k < va.size(); ++k)
      worst = std::max(worst, static_cast<double>(std::fabs(va[k] - vb[k])) / std::max(1.0, std::fabs(1.0 * vb[k])));
  }
  return worst;
}

// The tiny run's config for comparing W ranks with one process: no dropout
// (its masks depend on the batch each rank holds), SyncBN, `batch` per rank,
// `train_extra` added to [train] and `stage` (a [stage] body) for the
// fine-tune stage.
std::string dist_toml(const rz::test::TinyRunData& data, const std::string& name, const fs::path& runs, int epochs,
                      int batch, const std::string& train_extra = "", const std::string& stage = "") {
  std::string t = data.toml(name, runs.string(), epochs);
  t.replace(t.find("drop_rate = 0.1"), 15, "drop_rate = 0.0\nsync_bn = true");
  t.replace(t.find("batch = 8"), 9, "batch = " + std::to_string(batch));
  if (!stage.empty()) t.replace(t.find("kind = \"finetune\"\n"), 18, stage);
  return t + train_extra;
}

struct OneAndTwo {
  rz::test::CommandOutput two;                      // the 2-rank job's output
  std::vector<nlohmann::json> one_lines, two_lines;  // each run's metrics.jsonl
};

// `ranzcr train` of one.toml in one process and of two.toml under `m` (2
// ranks), both into `runs`; both must succeed.
OneAndTwo train_one_and_two(const std::string& m, const rz::test::TempDir& work, const fs::path& runs,
                            const std::string& one_toml, const std::string& two_toml) {
  const std::string cli = RZ_CLI_PATH;
  OneAndTwo r;
  const auto one = rz::test::run_command(cli + " train --config " + work.write("one.toml", one_toml));
  REQUIRE_MESSAGE(one.status == 0, one.text);
  r.two = rz::test::run_command(m + cli + " train --config " + work.write("two.toml", two_toml));
  REQUIRE_MESSAGE(r.two.status == 0, r.two.text);
  r.one_lines = metrics_lines(runs / "one" / "metrics.jsonl");
  r.two_lines = metrics_lines(runs / "two" / "metrics.jsonl");
  REQUIRE(r.one_lines.size() == r.two_lines.size());  // and rank 1 added no line of its own
  return r;
}

// The epoch lines of the 1-process and 2-rank logs agree: the same images, and
// each of `keys` within a relative 1e-4. Returns the number of epochs.
int same_epochs(const std::vector<nlohmann::json>& l1, const std::vector<nlohmann::json>& l2,
                std::initializer_list<const char*> keys) {
  int epochs = 0;
  for (size_t i = 0; i < l1.size(); ++i) {
    CHECK(l1[i]["step"] == l2[i]["step"]);
    if (l1[i]["type"] != "epoch") continue;
    ++epochs;
    CHECK(l2[i]["images"] == l1[i]["images"]);
    for (const char* k : keys) {
      CAPTURE(k);
      CHECK(l2[i][k].get<double>() == doctest::Approx(l1[i][k].get<double>()).epsilon(1e-4));
    }
  }
  return epochs;
}

}  // namespace

TEST_CASE("mpirun -np 2 ranzcr train: SyncBN at batch 4 per rank trains as one process at batch 8; rank 0 "
          "writes every file once; resume is exact") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
  const rz::test::TinyRunData data;
  const rz::test::TempDir work("dist_train");
  const std::string cli = RZ_CLI_PATH;
  const fs::path runs = work.path() / "runs";
  auto write = [&](const std::string& name, int batch) {
    return work.write(name + ".toml", dist_toml(data, name, runs, 3, batch));
  };
  const auto [two, l1, l2] = train_one_and_two(m, work, runs, dist_toml(data, "one", runs, 3, 8),
                                                dist_toml(data, "two", runs, 3, 4));
  const std::string mp = mpirun(0, &why);
  CHECK(two.text.find("rank 0 of 2 (mpi, openmpi), global batch 8") != std::string::npos);
  CHECK(two.text.find("sync_bn: ") != std::string::npos);
  // Rank 0 alone speaks: one stage line, one summary line.
  auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  CHECK(count(two.text, "stage finetune: ") == 1);
  CHECK(count(two.text, "best mean AUC") == 1);

  // The same run: losses, AUCs and weights within fp32 rounding.
  for (size_t i = 0; i < l1.size(); ++i) {
    CHECK(l1[i]["type"] == l2[i]["type"]);
    if (l1[i]["type"] == "epoch")
      CHECK(l2[i]["mean_auc"].get<double>() == doctest::Approx(l1[i]["mean_auc"].get<double>()).epsilon(1e-6));
  }
  CHECK(same_epochs(l1, l2, {"train_loss", "val_loss"}) == 3);
  const double d = weights_diff(runs / "two" / "last.ckpt", runs / "one" / "last.ckpt");
  MESSAGE("2 ranks vs 1 process after 12 steps: largest weight difference ", d);
  CHECK(d < 1e-5);
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(runs / "two")) files.insert(e.path().filename().string());
  CHECK(files == std::set<std::string>{"config.toml", "metrics.jsonl", "summary.csv", "last.ckpt", "best.ckpt",
                                       "best.safetensors", "report.html"});

  // Stopped right after epoch 1's last.ckpt (rank 0's fault point, counted
  // as in one process), then resumed on 2 ranks: the uninterrupted files.
  const auto logged = rz::test::run_command("RZ_FAULT_LOG=1 " + cli + " train --config " + write("probe", 8));
  REQUIRE(logged.status == 0);
  std::istringstream in(logged.text);
  int64_t after_ckpt = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("fault point ", 0) != 0) continue;
    const int64_t k = std::stoll(line.substr(12));
    if (line.find("last.ckpt") != std::string::npos && line.find("rename") != std::string::npos) {
      after_ckpt = k;
      break;
    }
  }
  REQUIRE(after_ckpt > 0);
  const fs::path ref = work.path() / "two-uninterrupted";
  fs::rename(runs / "two", ref);
  const std::string cfg_two = (work.path() / "two.toml").string();
  // MPMD: the first rank alone gets the fault point.
  const std::string mpmd = mp + "1 env RZ_FAULT_AFTER=" + std::to_string(after_ckpt + 1) + " " + cli +
                           " train --config " + cfg_two + " : -np 1 " + cli + " train --config " + cfg_two;
  const auto killed = rz::test::run_command(mpmd);
  CHECK_MESSAGE(killed.status != 0, killed.text);
  REQUIRE(fs::exists(runs / "two" / "last.ckpt"));
  CHECK(rz::read_checkpoint_state((runs / "two" / "last.ckpt").string()).epoch == 1);
  const auto resumed = rz::test::run_command(m + cli + " train --resume " + (runs / "two").string());
  REQUIRE_MESSAGE(resumed.status == 0, resumed.text);
  for (const char* f : {"last.ckpt", "best.ckpt", "best.safetensors"})
    CHECK_MESSAGE(read_file(runs / "two" / f) == read_file(ref / f), f, " differs from the uninterrupted run's");
  CHECK(metrics_lines(runs / "two" / "metrics.jsonl").size() == metrics_lines(ref / "metrics.jsonl").size());
}

TEST_CASE("mpirun -np 2 ranzcr train: gradient accumulation, clipping and EMA train as in one process") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
  const rz::test::TinyRunData data;
  const rz::test::TempDir work("dist_accum");
  // Micro-batch k holds the same 4 studies in both runs (1 process: 4 of
  // them; 2 ranks: 2 each, DistributedSampler order), so with SyncBN the
  // two runs average the same per-study gradients over 2 micro-batches,
  // clip the same global norm (tight: it binds) and update the same EMA.
  const fs::path runs = work.path() / "runs";
  const std::string accum_clip = "accum_steps = 2\nclip_grad = 0.05\n";
  const auto [two, l1, l2] = train_one_and_two(m, work, runs, dist_toml(data, "one", runs, 2, 4, accum_clip),
                                                dist_toml(data, "two", runs, 2, 2, accum_clip));
  CHECK(two.text.find("global batch 4") != std::string::npos);
  int steps = 0;
  for (size_t i = 0; i < l1.size(); ++i) {
    CHECK(l1[i]["step"] == l2[i]["step"]);
    if (l1[i]["type"] == "step") {
      ++steps;
      // The clip reads the averaged gradient: the same norm on both.
      CHECK(l2[i]["grad_norm"].get<double>() == doctest::Approx(l1[i]["grad_norm"].get<double>()).epsilon(1e-4));
      CHECK(l1[i]["grad_norm"].get<double>() > 0.05);
    } else {
      CHECK(l2[i]["val_loss"].get<double>() == doctest::Approx(l1[i]["val_loss"].get<double>()).epsilon(1e-4));
    }
  }
  CHECK(steps > 0);
  const double d = weights_diff(runs / "two" / "last.ckpt", runs / "one" / "last.ckpt");
  MESSAGE("accumulation 2, clip 0.05, EMA 0.9: largest weight difference ", d);
  // fp32 with a different summation order (two half-batch sums, then the
  // all-reduce): measured 9e-6 on x86-64; a wrong average or a clip on the
  // local norm moves weights by >1e-3.
  CHECK(d < 3e-5);
}

TEST_CASE("mpirun -np 2 ranzcr train: distillation runs the frozen teacher on each rank's shard, pairs kept") {
  std::string why;
  const std::string m = mpirun(2, &why);
  if (m.empty()) RZ_SKIP_TEST(why.c_str());
  const rz::test::TinyRunData data;
  const rz::test::TempDir work("dist_kd");
  const std::string cli = RZ_CLI_PATH;
  const fs::path runs = work.path() / "runs";
  std::string teacher = data.toml("teacher", runs.string(), 1);
  teacher.replace(teacher.find("kind = \"finetune\""), 17, "kind = \"teacher\"");
  const auto t = rz::test::run_command(cli + " train --config " + work.write("teacher.toml", teacher));
  REQUIRE_MESSAGE(t.status == 0, t.text);
  // The student's annotated-study pairs: the teacher reads the annotated
  // image, the student the plain one, both from the same crop and rotation.
  // A rank that paired a teacher image with another study's student image,
  // or fed the teacher the wrong shard, would change the feature loss.
  const std::string kd =
      "kind = \"student-kd\"\nteacher = \"" + (runs / "teacher" / "best.ckpt").string() + "\"\n";
  const auto [two, l1, l2] = train_one_and_two(m, work, runs, dist_toml(data, "one", runs, 2, 8, "", kd),
                                                dist_toml(data, "two", runs, 2, 4, "", kd));
  for (const auto& line : l1)
    if (line["type"] == "epoch") CHECK(line["feat_loss"].get<double>() > 0);
  CHECK(same_epochs(l1, l2, {"feat_loss", "train_loss", "val_loss"}) == 2);
  const double d = weights_diff(runs / "two" / "last.ckpt", runs / "one" / "last.ckpt");
  MESSAGE("distilled student, 2 ranks vs 1 process: largest weight difference ", d);
  CHECK(d < 1e-5);
}
