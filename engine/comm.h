// Collectives for data-parallel training (DESIGN decision 13): one
// Communicator interface, three implementations.
//   single  one process: every collective is the identity;
//   mpi     CPU tensors over MPI (OpenMPI, or the cluster's own MPI);
//   nccl    CUDA tensors over NCCL, one process per GPU; the NCCL unique id
//           travels over MPI (a world of one needs no MPI).
// Processes are launched by `mpirun -np N` or `srun`; detect_dist_env()
// reads the rank, world size and local rank from their environment. A
// collective that does not complete within the communicator's timeout (a
// rank died or stalled) throws rz::Error naming the collective, its size and
// the rank; the caller then ends the job with abort() so no rank hangs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/device.h"
#include "engine/tensor.h"

namespace rz {

// Where this process sits in a launch, from the launcher's environment:
// OpenMPI (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK), MPICH/Intel MPI/PMI
// (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID) or SLURM (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID). Without any: rank 0 of 1. Malformed values are errors
// naming the variable.
struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string launcher;  // "openmpi", "pmi", "slurm" or "" (not launched)
};
DistEnv detect_dist_env();

// A collective in flight (started by a start_* call). wait() returns when
// its result may be read on the host (CPU) or by later work on the op stream
// (CUDA); it throws when the communicator's timeout passes first.
class CommWork {
 public:
  virtual ~CommWork() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;
  // The device kind whose tensors the collectives take.
  virtual bool takes_cuda() const = 0;
  // Where host values travel for this communicator's collectives (the
  // CPU, or NCCL's GPU).
  virtual Device device() const = 0;

  // In place: t becomes the elementwise sum of t over the ranks. t is
  // contiguous, f32, f64 or bf16 (bf16 is summed in fp32 and rounded once
  // per partial sum: the wire format of a bf16 gradient reduction).
  virtual std::unique_ptr<CommWork> start_all_reduce_sum(Tensor& t) = 0;
  void all_reduce_sum(Tensor& t) { start_all_reduce_sum(t)->wait(); }
  // In place: t becomes root's t.
  virtual void broadcast(Tensor& t, int root) = 0;
  // [world_size, t.numel()]: every rank's t (same shape and dtype on every
  // rank), in rank order, on t's device.
  virtual Tensor all_gather(const Tensor& t) = 0;
  virtual void barrier() = 0;
  // Host values (counts, flags, loss terms): each becomes its sum over the ranks.
  virtual void all_reduce_sum(double* values, int n) = 0;
  // Ends every process of the job (MPI_Abort); for a rank that failed.
  virtual void abort(int code) noexcept = 0;
  double timeout_s() const { return timeout_s_; }

 protected:
  explicit Communicator(double timeout_s) : timeout_s_(timeout_s) {}
  double timeout_s_;
};

// Whether this build has the MPI and NCCL communicators.
bool mpi_built();
bool nccl_built();

std::shared_ptr<Communicator> single_communicator();
// The MPI world (MPI is initialized on first use and finalized at exit).
std::shared_ptr<Communicator> mpi_communicator(double timeout_s);
// NCCL among the processes of the MPI world, on CUDA device `device` (the
// caller picks the local rank's GPU). A world of one needs no MPI.
std::shared_ptr<Communicator> nccl_communicator(int device, double timeout_s);
// After an error on this rank: ends every process of the job (MPI_Abort
// through the multi-process communicator this process set up) and does not
// return; returns false when there is none (a single process).
bool abort_job(int code) noexcept;

// The communicator of this launch for tensors on `device`: single for a
// world of one, MPI for CPU tensors, NCCL for CUDA tensors. Errors name what
// the build lacks.
std::shared_ptr<Communicator> communicator_for(const Device& device, double timeout_s);

}  // namespace rz
