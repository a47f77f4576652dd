#include "engine/comm.h"

#include <chrono>
#include <climits>
#include <cstring>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"

#if defined(RZ_HAVE_MPI)
#include <mpi.h>
#endif
#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif
#if defined(RZ_HAVE_NCCL)
#include <nccl.h>
#endif

namespace rz {

namespace {

// An environment variable as a non-negative int; nullopt when unset.
bool env_int(const char* name, int* out) {
  const char* v = std::getenv(name);
  if (!v) return false;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  RZ_CHECK(end != v && *end == '\0' && x >= 0 && x <= INT_MAX, "environment variable ", name, " = '", v,
           "': expected a non-negative integer");
  *out = static_cast<int>(x);
  return true;
}

using Clock = std::chrono::steady_clock;

// The multi-process communicator this process set up, for abort_job() (MPI
// and NCCL are process-wide by nature).
std::mutex g_active_mutex;
std::shared_ptr<Communicator> g_active;

void set_active(const std::shared_ptr<Communicator>& c) {
  const std::lock_guard<std::mutex> lock(g_active_mutex);
  g_active = c;
}

// Polls `done` until it returns true or `timeout_s` passes (then throws with
// `what`). MPI moves a large message only while it is polled (no progress
// thread), so the first half second is a busy poll; a longer wait (a slow
// or stalled rank) polls every 200 us and leaves the core alone.
template <class Done>
void wait_until(Done done, const std::string& what, double timeout_s, int rank, int world) {
  const auto t0 = Clock::now();
  while (!done()) {
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (waited > timeout_s)
      RZ_THROW(what, " did not complete within ", timeout_s, " s on rank ", rank, " of ", world,
               " (dist.timeout_s): another rank failed or stalled");
    if (waited > 0.5) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

int checked_count(const Tensor& t, const char* what) {
  RZ_CHECK(t.defined(), what, ": undefined tensor");
  RZ_CHECK(t.numel() <= INT_MAX, what, ": ", t.numel(), " elements is more than one call carries (", INT_MAX, ")");
  return static_cast<int>(t.numel());
}

// ---- single process ----

class DoneWork final : public CommWork {
 public:
  void wait() override {}
};

class SingleCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce_sum;
  SingleCommunicator() : Communicator(0) {}
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  bool takes_cuda() const override { return true; }  // any device: nothing moves
  Device device() const override { return Device::cpu(); }
  std::unique_ptr<CommWork> start_all_reduce_sum(Tensor& t) override {
    checked_count(t, "all-reduce");
    return std::make_unique<DoneWork>();
  }
  void broadcast(Tensor& t, int root) override {
    RZ_CHECK(root == 0, "broadcast from rank ", root, " in a world of one");
    checked_count(t, "broadcast");
  }
  Tensor all_gather(const Tensor& t) override {
    checked_count(t, "all-gather");
    return reshape(t.detach().clone(), {1, t.numel()});
  }
  void barrier() override {}
  void all_reduce_sum(double*, int) override {}
  void abort(int) noexcept override {}
};

}  // namespace

DistEnv detect_dist_env() {
  DistEnv e;
  int r = 0, w = 0, l = 0;
  if (env_int("OMPI_COMM_WORLD_SIZE", &w)) {
    env_int("OMPI_COMM_WORLD_RANK", &r);
    env_int("OMPI_COMM_WORLD_LOCAL_RANK", &l);
    e.launcher = "openmpi";
  } else if (env_int("PMI_SIZE", &w)) {
    env_int("PMI_RANK", &r);
    if (!env_int("MPI_LOCALRANKID", &l)) env_int("PMI_LOCAL_RANK", &l);
    e.launcher = "pmi";
  } else if (env_int("SLURM_NTASKS", &w)) {
    env_int("SLURM_PROCID", &r);
    env_int("SLURM_LOCALID", &l);
    e.launcher = "slurm";
  } else {
    return e;
  }
  RZ_CHECK(w >= 1 && r < w && l < w, "launcher environment (", e.launcher, "): rank ", r, ", local rank ", l,
           " and world size ", w, " are inconsistent");
  e.rank = r;
  e.world_size = w;
  e.local_rank = l;
  return e;
}

std::shared_ptr<Communicator> single_communicator() {
  static const auto c = std::make_shared<SingleCommunicator>();
  return c;
}

// ---- MPI ----

#if defined(RZ_HAVE_MPI)
bool mpi_built() { return true; }

namespace {

void mpi_check(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  RZ_THROW("MPI: ", what, " failed: ", std::string(msg, static_cast<size_t>(len)));
}

// bf16 on the wire: 16-bit words summed in fp32, rounded to nearest even.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bf16*>(in);
  auto* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

// The process's MPI: initialized on first use (unless the host program did),
// finalized at exit when initialized here.
struct MpiRuntime {
  bool owned = false;
  MPI_Op bf16_op = MPI_OP_NULL;
  MpiRuntime() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owned = true;
    }
    // Errors come back as codes (checked), never as the default abort.
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(MPI_Op_create(&bf16_sum, 1, &bf16_op), "MPI_Op_create (bf16 sum)");
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (bf16_op != MPI_OP_NULL) MPI_Op_free(&bf16_op);
    if (owned) MPI_Finalize();
  }
};

MpiRuntime& mpi_runtime() {
  static MpiRuntime r;
  return r;
}

MPI_Datatype mpi_type(DType t, const char* what) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::BF16: return MPI_UINT16_T;
    case DType::I64: return MPI_INT64_T;
    case DType::U8: return MPI_UINT8_T;
  }
  RZ_THROW(what, ": unsupported dtype");
}

class MpiCommunicator;

class MpiWork final : public CommWork {
 public:
  MpiWork(MPI_Request req, std::string what, const Communicator& c)
      : req_(req), what_(std::move(what)), timeout_s_(c.timeout_s()), rank_(c.rank()), world_(c.world_size()) {}
  void wait() override {
    if (req_ == MPI_REQUEST_NULL) return;
    wait_until(
        [&] {
          int done = 0;
          mpi_check(MPI_Test(&req_, &done, MPI_STATUS_IGNORE), what_);
          return done != 0;
        },
        what_, timeout_s_, rank_, world_);
  }

 private:
  MPI_Request req_;
  std::string what_;
  double timeout_s_;
  int rank_, world_;
};

class MpiCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce_sum;
  explicit MpiCommunicator(double timeout_s) : Communicator(timeout_s) {
    mpi_runtime();
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_), "MPI_Comm_size");
    local_rank_ = detect_dist_env().local_rank;
  }
  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  bool takes_cuda() const override { return false; }
  Device device() const override { return Device::cpu(); }

  std::unique_ptr<CommWork> start_all_reduce_sum(Tensor& t) override {
    const int n = checked(t, "all-reduce");
    RZ_CHECK(is_floating(t.dtype()), "all-reduce of ", t.str(), ": f32, f64 or bf16 only");
    const MPI_Op op = t.dtype() == DType::BF16 ? mpi_runtime().bf16_op : MPI_SUM;
    MPI_Request req = MPI_REQUEST_NULL;
    const std::string what = "all-reduce of " + std::to_string(n) + " " + dtype_name(t.dtype()) + " values";
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), n, mpi_type(t.dtype(), "all-reduce"), op, MPI_COMM_WORLD,
                             &req),
              what);
    return std::make_unique<MpiWork>(req, what, *this);
  }
  void broadcast(Tensor& t, int root) override {
    const int n = checked(t, "broadcast");
    RZ_CHECK(root >= 0 && root < world_, "broadcast from rank ", root, " of ", world_);
    MPI_Request req = MPI_REQUEST_NULL;
    const std::string what = "broadcast of " + std::to_string(n) + " values from rank " + std::to_string(root);
    mpi_check(MPI_Ibcast(t.raw_data(), n, mpi_type(t.dtype(), "broadcast"), root, MPI_COMM_WORLD, &req), what);
    MpiWork(req, what, *this).wait();
  }
  Tensor all_gather(const Tensor& t) override {
    const int n = checked(t, "all-gather");
    Tensor out = Tensor::empty({world_, t.numel()}, t.dtype());
    MPI_Request req = MPI_REQUEST_NULL;
    const MPI_Datatype type = mpi_type(t.dtype(), "all-gather");
    const std::string what = "all-gather of " + std::to_string(n) + " values";
    mpi_check(MPI_Iallgather(t.raw_data(), n, type, out.raw_data(), n, type, MPI_COMM_WORLD, &req), what);
    MpiWork(req, what, *this).wait();
    return out;
  }
  void barrier() override {
    MPI_Request req = MPI_REQUEST_NULL;
    mpi_check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "barrier");
    MpiWork(req, "barrier", *this).wait();
  }
  void all_reduce_sum(double* values, int n) override {
    MPI_Request req = MPI_REQUEST_NULL;
    const std::string what = "all-reduce of " + std::to_string(n) + " host values";
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req), what);
    MpiWork(req, what, *this).wait();
  }
  void abort(int code) noexcept override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  int checked(const Tensor& t, const char* what) const {
    RZ_CHECK(t.device().is_cpu(), what, " over MPI takes CPU tensors, got one on ", t.device().str(),
             " (CUDA tensors go through NCCL)");
    return checked_count(t, what);
  }
  int rank_ = 0, world_ = 1, local_rank_ = 0;
};

}  // namespace

std::shared_ptr<Communicator> mpi_communicator(double timeout_s) {
  static std::mutex m;
  static std::shared_ptr<MpiCommunicator> c;
  const std::lock_guard<std::mutex> lock(m);
  if (!c) {
    c = std::make_shared<MpiCommunicator>(timeout_s);
    if (c->world_size() > 1) set_active(c);
  }
  return c;
}

#else
bool mpi_built() { return false; }
std::shared_ptr<Communicator> mpi_communicator(double) {
  RZ_THROW("this build has no MPI (install libopenmpi-dev, or the cluster's MPI, and rebuild)");
}
#endif

// ---- NCCL ----

#if defined(RZ_HAVE_NCCL)
bool nccl_built() { return true; }

namespace {

#define RZ_NCCL_CHECK(expr)                                                                  \
  do {                                                                                       \
    const ncclResult_t rz_nccl_ = (expr);                                                    \
    if (rz_nccl_ != ncclSuccess)                                                             \
      RZ_THROW("NCCL call failed: " #expr ": ", ncclGetErrorString(rz_nccl_));               \
  } while (0)

ncclDataType_t nccl_type(DType t, const char* what) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::I64: return ncclInt64;
    case DType::U8: return ncclUint8;
  }
  RZ_THROW(what, ": unsupported dtype");
}

class NcclCommunicator;

// The collective's completion event on the communicator's stream; wait()
// polls it (and NCCL's asynchronous error) until the timeout, then orders
// the op stream (cudaStreamPerThread) after it.
class NcclWork final : public CommWork {
 public:
  NcclWork(cudaEvent_t done, ncclComm_t comm, std::string what, const Communicator& c)
      : done_(done), comm_(comm), what_(std::move(what)), timeout_s_(c.timeout_s()), rank_(c.rank()),
        world_(c.world_size()) {}
  ~NcclWork() override { cudaEventDestroy(done_); }
  void wait() override {
    wait_until(
        [&] {
          ncclResult_t async = ncclSuccess;
          RZ_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
          RZ_CHECK(async == ncclSuccess, what_, ": NCCL reported ", ncclGetErrorString(async));
          const cudaError_t q = cudaEventQuery(done_);
          if (q == cudaErrorNotReady) return false;
          RZ_CUDA_CHECK(q);
          return true;
        },
        what_, timeout_s_, rank_, world_);
    RZ_CUDA_CHECK(cudaStreamWaitEvent(cudaStreamPerThread, done_, 0));
  }

 private:
  cudaEvent_t done_;
  ncclComm_t comm_;
  std::string what_;
  double timeout_s_;
  int rank_, world_;
};

class NcclCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce_sum;
  NcclCommunicator(int device, double timeout_s) : Communicator(timeout_s), device_(device) {
    const DistEnv env = detect_dist_env();
    ncclUniqueId id{};
    if (env.world_size > 1) {
      auto mpi = mpi_communicator(timeout_s);
      rank_ = mpi->rank();
      world_ = mpi->world_size();
      local_rank_ = mpi->local_rank();
      if (rank_ == 0) RZ_NCCL_CHECK(ncclGetUniqueId(&id));
      Tensor idt = Tensor::empty({static_cast<int64_t>(sizeof id)}, DType::U8);
      std::memcpy(idt.raw_data(), &id, sizeof id);
      mpi->broadcast(idt, 0);
      std::memcpy(&id, idt.raw_data(), sizeof id);
    } else {
      RZ_NCCL_CHECK(ncclGetUniqueId(&id));
    }
    RZ_CUDA_CHECK(cudaSetDevice(device_));
    RZ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RZ_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  bool takes_cuda() const override { return true; }
  Device device() const override { return Device::cuda(device_); }
  int checked_device() const { return device_; }

  std::unique_ptr<CommWork> start_all_reduce_sum(Tensor& t) override {
    const int n = checked(t, "all-reduce");
    RZ_CHECK(is_floating(t.dtype()), "all-reduce of ", t.str(), ": f32, f64 or bf16 only");
    const std::string what = "all-reduce of " + std::to_string(n) + " " + dtype_name(t.dtype()) + " values";
    after_op_stream();
    RZ_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(n), nccl_type(t.dtype(), "all-reduce"),
                                ncclSum, comm_, stream_));
    return std::make_unique<NcclWork>(record(), comm_, what, *this);
  }
  void broadcast(Tensor& t, int root) override {
    const int n = checked(t, "broadcast");
    RZ_CHECK(root >= 0 && root < world_, "broadcast from rank ", root, " of ", world_);
    after_op_stream();
    RZ_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(n), nccl_type(t.dtype(), "broadcast"),
                                root, comm_, stream_));
    NcclWork(record(), comm_, "broadcast of " + std::to_string(n) + " values", *this).wait();
  }
  Tensor all_gather(const Tensor& t) override {
    const int n = checked(t, "all-gather");
    Tensor out = Tensor::empty({world_, t.numel()}, t.dtype(), t.device());
    after_op_stream();
    RZ_NCCL_CHECK(ncclAllGather(t.raw_data(), out.raw_data(), static_cast<size_t>(n),
                                nccl_type(t.dtype(), "all-gather"), comm_, stream_));
    NcclWork(record(), comm_, "all-gather of " + std::to_string(n) + " values", *this).wait();
    return out;
  }
  void barrier() override {
    Tensor one = Tensor::zeros({1}, DType::F32, Device::cuda(device_));
    all_reduce_sum(one);
    RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
  }
  void all_reduce_sum(double* values, int n) override {
    Tensor t = Tensor::from_vector(std::vector<double>(values, values + n), {n}, Device::cuda(device_));
    all_reduce_sum(t);
    const Tensor h = t.to(Device::cpu());
    std::memcpy(values, h.raw_data(), sizeof(double) * static_cast<size_t>(n));
  }
  void abort(int code) noexcept override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
#if defined(RZ_HAVE_MPI)
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    std::_Exit(code);
  }

 private:
  int checked(const Tensor& t, const char* what) const {
    RZ_CHECK(t.device().is_cuda() && t.device().index == device_, what, " over NCCL takes tensors on cuda:", device_,
             ", got one on ", t.device().str());
    return checked_count(t, what);
  }
  // The collective reads what the op stream wrote.
  void after_op_stream() {
    cudaEvent_t ready = nullptr;
    RZ_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    RZ_CUDA_CHECK(cudaEventRecord(ready, cudaStreamPerThread));
    RZ_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    RZ_CUDA_CHECK(cudaEventDestroy(ready));
  }
  cudaEvent_t record() {
    cudaEvent_t done = nullptr;
    RZ_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    RZ_CUDA_CHECK(cudaEventRecord(done, stream_));
    return done;
  }
  int device_;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::shared_ptr<Communicator> nccl_communicator(int device, double timeout_s) {
  static std::mutex m;
  static std::shared_ptr<NcclCommunicator> c;
  const std::lock_guard<std::mutex> lock(m);
  if (!c) {
    c = std::make_shared<NcclCommunicator>(device, timeout_s);
    if (c->world_size() > 1) set_active(c);
  }
  RZ_CHECK(c->checked_device() == device, "NCCL communicator already set up on cuda:", c->checked_device(),
           ", asked for cuda:", device);
  return c;
}

#else
bool nccl_built() { return false; }
std::shared_ptr<Communicator> nccl_communicator(int, double) {
  RZ_THROW("this build has no NCCL (a CUDA build finds it in the CUDA toolkit or RZ_NCCL_ROOT)");
}
#endif

bool abort_job(int code) noexcept {
  std::shared_ptr<Communicator> c;
  {
    const std::lock_guard<std::mutex> lock(g_active_mutex);
    c = g_active;
  }
  if (!c) return false;
  c->abort(code);
  return true;
}

std::shared_ptr<Communicator> communicator_for(const Device& device, double timeout_s) {
  const DistEnv env = detect_dist_env();
  if (env.world_size == 1) return single_communicator();
  if (device.is_cpu()) {
    RZ_CHECK(mpi_built(), "launched as rank ", env.rank, " of ", env.world_size, " (", env.launcher,
             ") with CPU tensors, but this build has no MPI (install libopenmpi-dev and rebuild)");
    return mpi_communicator(timeout_s);
  }
  RZ_CHECK(nccl_built() && mpi_built(), "launched as rank ", env.rank, " of ", env.world_size, " (", env.launcher,
           ") on ", device.str(), ", but this build lacks ", nccl_built() ? "MPI" : "NCCL",
           " (CUDA tensors are reduced over NCCL, bootstrapped over MPI)");
  return nccl_communicator(device.index, timeout_s);
}

}  // namespace rz
