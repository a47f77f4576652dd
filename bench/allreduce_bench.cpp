// All-reduce bandwidth per message size through the engine's Communicator
// (engine/comm.h): MPI for CPU tensors, NCCL for CUDA tensors. Launch it as
// the trainer is launched:
//
//   mpirun -np 2 allreduce_bench                 # CPU tensors over MPI
//   mpirun -np 8 allreduce_bench --device cuda   # one GPU per rank, NCCL
//   allreduce_bench --device cuda                # NCCL at world size 1
//
// For each size (f32, 4 KiB .. --max-mb, times 4) it runs --warmup untimed
// and --reps timed all-reduces, each ended by wait() (and, on CUDA, a stream
// synchronize), and prints the median time, the algorithm bandwidth
// (bytes / time) and the bus bandwidth (algbw * 2 (W-1) / W, NCCL's
// convention: what each rank's link carries in a ring all-reduce, comparable
// across world sizes). Rank 0 prints; --csv FILE writes the rows too.
// --mpi-blocking times MPI_Allreduce itself on the same buffers (CPU): the
// library's blocking baseline next to the Communicator's non-blocking
// MPI_Iallreduce, which the trainer needs for overlap and timeouts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/comm.h"
#include "engine/device.h"
#include "engine/tensor.h"
#if defined(RZ_HAVE_CUDA)
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif
#if defined(RZ_HAVE_MPI)
#include <mpi.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void sync_device(const rz::Device& d) {
#if defined(RZ_HAVE_CUDA)
  if (d.is_cuda()) RZ_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
#else
  (void)d;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu", csv;
  double max_mb = 256;
  int reps = 20, warmup = 5;
  bool mpi_blocking = false;
  CLI::App app("All-reduce bandwidth per message size through the Communicator", "allreduce_bench");
  app.add_option("--device", device, "cpu (MPI) or cuda (NCCL, the GPU of the local rank)");
  app.add_option("--max-mb", max_mb, "largest message in MiB")->check(CLI::Range(0.004, 65536.0));
  app.add_option("--reps", reps, "timed all-reduces per size")->check(CLI::Range(1, 1000000));
  app.add_option("--warmup", warmup, "untimed all-reduces per size")->check(CLI::Range(0, 1000000));
  app.add_option("--csv", csv, "also write the rows to this CSV file");
  app.add_flag("--mpi-blocking", mpi_blocking, "time blocking MPI_Allreduce instead (CPU, 2+ ranks)");
  CLI11_PARSE(app, argc, argv);
  try {
    const rz::DistEnv env = rz::detect_dist_env();
    rz::Device dev = rz::parse_device(device);
    if (dev.is_cuda()) dev = rz::Device::cuda(env.local_rank);
    auto comm = dev.is_cuda() ? rz::nccl_communicator(dev.index, 120.0)
                              : (env.world_size > 1 ? rz::mpi_communicator(120.0) : rz::single_communicator());
    const int W = comm->world_size();
#if !defined(RZ_HAVE_MPI)
    if (mpi_blocking) throw std::runtime_error("--mpi-blocking: this build has no MPI");
#endif
    if (mpi_blocking && comm->name() != "mpi") throw std::runtime_error("--mpi-blocking needs CPU tensors on 2+ ranks");
    std::FILE* out = comm->rank() == 0 ? stdout : nullptr;
    std::ofstream csv_out;
    if (out && !csv.empty()) {
      csv_out.open(csv);
      if (!csv_out) throw std::runtime_error("cannot write " + csv);
      csv_out << "communicator,world_size,bytes,median_us,algbw_gbps,busbw_gbps\n";
    }
    if (out)
      std::fprintf(out, "all-reduce (f32 sum) over %d rank(s), %s, %s tensors, median of %d\n", W,
                   mpi_blocking ? "MPI_Allreduce (blocking baseline)" : (comm->name() + " communicator").c_str(),
                   dev.str().c_str(), reps);
    if (out) std::fprintf(out, "%12s %12s %12s %12s\n", "bytes", "time (us)", "algbw GB/s", "busbw GB/s");
    for (int64_t bytes = 4096; bytes <= static_cast<int64_t>(max_mb * 1024 * 1024); bytes *= 4) {
      rz::Tensor t = rz::Tensor::ones({bytes / 4}, rz::DType::F32, dev);
      std::vector<double> times;
      for (int r = 0; r < warmup + reps; ++r) {
        comm->barrier();
        const auto t0 = Clock::now();
        if (mpi_blocking) {
#if defined(RZ_HAVE_MPI)
          if (MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM,
                            MPI_COMM_WORLD) != MPI_SUCCESS)
            throw std::runtime_error("MPI_Allreduce failed");
#endif
        } else {
          comm->all_reduce_sum(t);
        }
        sync_device(dev);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (r >= warmup) times.push_back(s);
        t.fill_(1.0);  // keep the values bounded
      }
      // Every rank's median, the slowest one counts.
      double med = median(times);
      std::vector<double> all(static_cast<size_t>(W), 0.0);
      all[static_cast<size_t>(comm->rank())] = med;
      comm->all_reduce_sum(all.data(), W);
      med = *std::max_element(all.begin(), all.end());
      const double algbw = static_cast<double>(bytes) / med / 1e9;
      const double busbw = W > 1 ? algbw * 2.0 * (W - 1) / W : 0.0;
      if (out) std::fprintf(out, "%12lld %12.1f %12.3f %12.3f\n", static_cast<long long>(bytes), med * 1e6, algbw, busbw);
      if (csv_out.is_open())
        csv_out << (mpi_blocking ? std::string("mpi-blocking") : comm->name()) << "," << W << "," << bytes << "," << med * 1e6 << "," << algbw << "," << busbw << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: error: %s\n", e.what());
    rz::abort_job(1);
    return 1;
  }
  return 0;
}
