#include "train/data_parallel.h"

#include <algorithm>

#include "engine/cuda_context.h"
#include "engine/ops.h"

namespace rz {

GradientReducer::GradientReducer(std::shared_ptr<Communicator> comm, std::vector<Tensor> params, ReducerOptions opt)
    : comm_(std::move(comm)), params_(std::move(params)) {
  RZ_CHECK(comm_, "GradientReducer: no communicator");
  RZ_CHECK(opt.bucket_mb > 0, "GradientReducer: bucket size ", opt.bucket_mb, " MB");
  RZ_CHECK(opt.reduce_dtype == DType::F32 || opt.reduce_dtype == DType::BF16,
           "GradientReducer: gradients are reduced in f32 or bf16, not ", dtype_name(opt.reduce_dtype));
  const auto limit = static_cast<int64_t>(opt.bucket_mb * 1024.0 * 1024.0);
  bucket_of_.assign(params_.size(), 0);
  seen_.assign(params_.size(), 0);
  // Reverse registration order: roughly the order backward finishes them.
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    RZ_CHECK(p.defined() && is_floating(p.dtype()), "GradientReducer: parameter ", k, " is not floating point");
    RZ_CHECK(p.device() == params_.front().device(), "GradientReducer: parameters on several devices (",
             p.device().str(), " and ", params_.front().device().str(), ")");
    const DType wire = p.dtype() == DType::F32 ? opt.reduce_dtype : p.dtype();
    const int64_t pb = p.numel() * static_cast<int64_t>(dtype_size(wire));
    if (buckets_.empty() || (bytes > 0 && bytes + pb > limit) ||
        buckets_.back().flat.dtype() != wire) {
      buckets_.emplace_back();
      buckets_.back().flat = Tensor::empty({0}, wire);
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    b.offsets.push_back(b.offsets.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += pb;
  }
  for (Bucket& b : buckets_) {
    const int64_t n = b.offsets.back() + params_[b.params.back()].numel();
    b.flat = Tensor::empty({n}, b.flat.dtype(), params_.front().device());
  }
  for (size_t k = 0; k < params_.size(); ++k) params_[k].impl().grad_ready = [this, k] { on_grad_ready(k); };
}

GradientReducer::~GradientReducer() {
  for (Tensor& p : params_) p.impl().grad_ready = nullptr;
}

std::vector<std::vector<size_t>> GradientReducer::bucket_layout() const {
  std::vector<std::vector<size_t>> out;
  for (const Bucket& b : buckets_) out.push_back(b.params);
  return out;
}

void GradientReducer::begin_backward(bool reduce) {
  reducing_ = reduce;
  started_in_backward_ = 0;
}

void GradientReducer::on_grad_ready(size_t k) {
  if (!reducing_ || seen_[k]) return;
  seen_[k] = 1;
  Bucket& b = buckets_[bucket_of_[k]];
  if (++b.ready == b.params.size()) {
    launch(b);
    ++started_in_backward_;
  }
}

void GradientReducer::launch(Bucket& b) {
  NvtxRange range("all-reduce bucket");
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Tensor& p = params_[b.params[i]];
    Tensor slice = b.flat.narrow0(b.offsets[i], p.numel());
    const Tensor g = p.grad();
    if (g.defined()) {
      slice.copy_(reshape(g, {p.numel()}));
    } else {
      slice.fill_(0.0);
    }
  }
  b.work = comm_->start_all_reduce_sum(b.flat);
}

void GradientReducer::finish() {
  if (!reducing_) return;
  NvtxRange range("gradient all-reduce wait");
  for (Bucket& b : buckets_)
    if (!b.work) launch(b);
  const double inv_world = 1.0 / static_cast<double>(comm_->world_size());
  for (Bucket& b : buckets_) {
    b.work->wait();
    b.work.reset();
    b.ready = 0;
    for (size_t i = 0; i < b.params.size(); ++i) {
      Tensor& p = params_[b.params[i]];
      seen_[b.params[i]] = 0;
      if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      Tensor g = p.grad();
      g.copy_(reshape(b.flat.narrow0(b.offsets[i], p.numel()), p.shape()));
      g.mul_(inv_world);
    }
  }
  reducing_ = false;
}

void GradientReducer::average(double* values, int n) {
  comm_->all_reduce_sum(values, n);
  for (int i = 0; i < n; ++i) values[i] /= static_cast<double>(comm_->world_size());
}

void broadcast_state(Communicator& comm, const std::vector<Tensor>& tensors, int root) {
  for (Tensor t : tensors) {
    if (t.device() == comm.device() || comm.world_size() == 1) {
      comm.broadcast(t, root);
      t.bump_version();
    } else {
      Tensor moved = t.to(comm.device());
      comm.broadcast(moved, root);
      t.copy_(moved);
    }
  }
}

std::vector<float> gather_sharded_rows(Communicator& comm, const std::vector<float>& mine, int64_t total,
                                       int64_t width) {
  const int64_t W = comm.world_size(), r = comm.rank();
  const int64_t rows = static_cast<int64_t>(mine.size()) / std::max<int64_t>(width, 1);
  RZ_CHECK(rows * width == static_cast<int64_t>(mine.size()) && rows == (total - r + W - 1) / W,
           "gather_sharded_rows: rank ", r, " holds ", mine.size(), " values, expected ", (total - r + W - 1) / W,
           " rows of ", width);
  if (W == 1) return mine;
  const int64_t max_rows = (total + W - 1) / W;
  std::vector<float> padded(static_cast<size_t>(max_rows * width), 0.0f);
  std::copy(mine.begin(), mine.end(), padded.begin());
  Tensor t = Tensor::from_vector(padded, {max_rows * width}).to(comm.device());
  const Tensor all = comm.all_gather(t).to(Device::cpu());
  const float* a = all.data<float>();
  std::vector<float> out(static_cast<size_t>(total * width));
  for (int64_t q = 0; q < W; ++q)
    for (int64_t j = 0; j * W + q < total; ++j)
      std::copy(a + (q * max_rows + j) * width, a + (q * max_rows + j + 1) * width,
                out.begin() + (j * W + q) * width);
  return out;
}

}  // namespace rz
