// Data-parallel training over a Communicator (engine/comm.h), as PyTorch's
// DistributedDataParallel: every rank holds the whole model, reads its own
// shard of each epoch (data::LoaderOptions::shard_rank), and after backward
// every gradient is the average over the ranks, so the optimizer takes the
// same step everywhere.
//
// GradientReducer: the trainable parameters are packed, in reverse order of
// registration (the order backward produces their gradients), into buckets
// of about dist.bucket_mb. A parameter's grad_ready hook (engine/tensor.h)
// fires when backward has accumulated its gradient; when the last gradient
// of a bucket is in, the bucket is copied into one flat buffer (in the
// reduction dtype, f32 or bf16) and its all-reduce starts, overlapping the
// rest of backward (on CUDA on NCCL's own stream). finish() waits for every
// bucket and writes the averages back. With gradient accumulation only the
// last micro-batch's backward reduces (PyTorch's no_sync). A parameter that
// got no gradient in a step contributes zeros.
#pragma once

#include <memory>
#include <vector>

#include "engine/comm.h"
#include "engine/tensor.h"
#include "train/train_step.h"

namespace rz {

struct ReducerOptions {
  double bucket_mb = 25.0;
  DType reduce_dtype = DType::F32;  // F32 (the gradient's own dtype for f64) or BF16
};

class GradientReducer final : public GradientSync {
 public:
  GradientReducer(std::shared_ptr<Communicator> comm, std::vector<Tensor> params, ReducerOptions opt);
  ~GradientReducer() override;  // removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void begin_backward(bool reduce) override;
  void finish() override;
  void average(double* values, int n) override;

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Parameters per bucket, in bucket order (indices into the params given).
  std::vector<std::vector<size_t>> bucket_layout() const;
  // Buckets whose all-reduce started inside backward (from a hook) in the
  // last reduced step, not from finish(): the overlap actually achieved.
  int64_t started_in_backward() const { return started_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each parameter in flat
    Tensor flat;
    size_t ready = 0;
    std::unique_ptr<CommWork> work;
  };
  void on_grad_ready(size_t param);
  void launch(Bucket& b);

  std::shared_ptr<Communicator> comm_;
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;   // per parameter
  std::vector<char> seen_;          // per parameter: its hook fired this step
  bool reducing_ = false;
  int64_t started_in_backward_ = 0;
};

// Every parameter and buffer (running statistics) of rank `root` copied to
// all ranks: the common starting point of a data-parallel run.
void broadcast_state(Communicator& comm, const std::vector<Tensor>& tensors, int root = 0);

// Reassembles per-rank rows into the order of the whole: rank r held rows
// r, r + W, r + 2W, ... (the loader's shard without drop_last) of `total`
// rows of `width` floats each. Returns all `total * width` values on every
// rank.
std::vector<float> gather_sharded_rows(Communicator& comm, const std::vector<float>& mine, int64_t total,
                                       int64_t width);

}  // namespace rz
