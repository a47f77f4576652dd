// Loader: a pool of worker threads claims epoch positions one sample at a
// time, in order, never more than `prefetch` batches ahead of the consumer;
// every sample writes straight into its row of the batch tensor, so a batch is
// ready when its last sample finishes and next() hands the tensor over
// without a copy. Per-sample (not per-batch) claiming lets all workers help
// with the batch the consumer waits for, which keeps latency low when
// prefetch is small. All shared state sits behind one mutex; transforms run
// outside it. start_epoch bumps a generation counter: a worker still running
// a transform of an abandoned epoch holds its own reference to that batch's
// tensors, writes into them harmlessly and drops the result.
#include "data/loader.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <numeric>
#include <utility>

#include "data/cache.h"
#include "data/image.h"
#include "data/resize.h"
#include "engine/error.h"

namespace rz::data {

namespace {

// splitmix64's finalizer: a bijective 64-bit mixer.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t combine(uint64_t h, uint64_t v) {
  return mix64(h ^ mix64(v + 0x9e3779b97f4a7c15ull));
}

// Domain tags keep the permutation stream and the sample streams apart.
constexpr uint64_t kOrderTag = 0x6f72646572ull;     // "order"
constexpr uint64_t kSampleTag = 0x73616d706c65ull;  // "sample"

uint64_t epoch_key(uint64_t seed, int64_t epoch) {
  return combine(mix64(seed), static_cast<uint64_t>(epoch));
}
uint64_t order_seed(uint64_t seed, int64_t epoch) {
  return combine(epoch_key(seed, epoch), kOrderTag);
}
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t position) {
  return combine(combine(epoch_key(seed, epoch), kSampleTag), static_cast<uint64_t>(position));
}

}  // namespace

Loader::Loader(std::vector<int64_t> samples, LoaderOptions options, SampleShape shape,
               SampleTransform transform)
    : samples_(std::move(samples)),
      opts_(options),
      shape_(shape),
      transform_(std::move(transform)),
      sample_numel_(shape.height * shape.width * shape.channels) {
  RZ_CHECK(!samples_.empty(), "Loader: the sample list is empty");
  RZ_CHECK(opts_.batch >= 1, "Loader: batch must be >= 1, got ", opts_.batch);
  RZ_CHECK(opts_.workers >= 1, "Loader: workers must be >= 1, got ", opts_.workers);
  RZ_CHECK(opts_.prefetch >= 1, "Loader: prefetch must be >= 1, got ", opts_.prefetch);
  RZ_CHECK(shape_.height >= 1 && shape_.width >= 1 && shape_.channels >= 1,
           "Loader: sample shape must be positive, got ", shape_.height, "x", shape_.width, "x",
           shape_.channels);
  RZ_CHECK(static_cast<bool>(transform_), "Loader: no sample transform given");
  RZ_CHECK(opts_.shard_count >= 1 && opts_.shard_rank >= 0 && opts_.shard_rank < opts_.shard_count,
           "Loader: shard ", opts_.shard_rank, " of ", opts_.shard_count, " is out of range");
  {
    const int64_t n = static_cast<int64_t>(samples_.size()), w = opts_.shard_count, r = opts_.shard_rank;
    shard_size_ = opts_.drop_last ? n / (w * opts_.batch) * opts_.batch : (n - r + w - 1) / w;
    if (w == 1) shard_size_ = n;
    RZ_CHECK(shard_size_ >= 1 || opts_.drop_last, "Loader: rank ", r, " of ", w, " gets no sample of ", n);
  }
  try {
    for (int i = 0; i < opts_.workers; ++i) workers_.emplace_back([this] { work(); });
  } catch (...) {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    throw;
  }
}

Loader::~Loader() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = size(), b = opts_.batch;
  return opts_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> Loader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order = samples_;
  if (opts_.shuffle) {
    Generator g(order_seed(opts_.seed, epoch));
    for (size_t i = order.size() - 1; i > 0; --i)
      std::swap(order[i], order[static_cast<size_t>(g.below(i + 1))]);
  }
  if (opts_.shard_count == 1) return order;
  std::vector<int64_t> mine(static_cast<size_t>(shard_size_));
  for (int64_t p = 0; p < shard_size_; ++p) mine[static_cast<size_t>(p)] = order[static_cast<size_t>(global_position(p))];
  return mine;
}

int64_t Loader::batch_rows(int64_t b) const {
  return std::min(opts_.batch, end_pos_ - b * opts_.batch);
}

void Loader::start_epoch(int64_t epoch, int64_t start_batch) {
  const int64_t nb = batches_per_epoch();
  RZ_CHECK(epoch >= 0, "Loader::start_epoch: epoch must be >= 0, got ", epoch);
  RZ_CHECK(start_batch >= 0 && start_batch <= nb, "Loader::start_epoch: start_batch ", start_batch,
           " out of range [0, ", nb, "]");
  std::vector<int64_t> order = epoch_order(epoch);
  {
    std::lock_guard lk(mu_);
    ++generation_;
    in_flight_.clear();
    epoch_ = epoch;
    order_ = std::move(order);
    end_pos_ = opts_.drop_last ? nb * opts_.batch : size();
    next_pos_ = start_batch * opts_.batch;
    next_batch_ = start_batch;
    active_ = true;
  }
  work_cv_.notify_all();
}

std::optional<Batch> Loader::next() {
  std::unique_lock lk(mu_);
  if (!active_) return std::nullopt;
  if (next_batch_ * opts_.batch >= end_pos_) {
    active_ = false;
    return std::nullopt;
  }
  const int64_t b = next_batch_;
  ready_cv_.wait(lk, [&] {
    const auto it = in_flight_.find(b);
    return stop_ || fatal_ || (it != in_flight_.end() && it->second.remaining == 0);
  });
  RZ_CHECK(!stop_, "Loader::next: the loader is shutting down");
  if (fatal_) {
    const std::exception_ptr e = fatal_;
    active_ = false;
    lk.unlock();
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      RZ_THROW("loader: a worker thread failed: ", x.what());
    } catch (...) {
      RZ_THROW("loader: a worker thread failed: unknown exception");
    }
  }
  InFlight f = std::move(in_flight_.at(b));
  in_flight_.erase(b);
  if (f.error) {
    // The epoch ends here; workers drop whatever they are still running.
    active_ = false;
    ++generation_;
    in_flight_.clear();
    lk.unlock();
    try {
      std::rethrow_exception(f.error);
    } catch (const std::exception& e) {
      RZ_THROW(f.error_context, ": ", e.what());
    } catch (...) {
      RZ_THROW(f.error_context, ": unknown exception");
    }
  }
  ++next_batch_;
  Batch out;
  out.images = std::move(f.images);
  out.images_annotated = std::move(f.annotated);
  out.indices = std::move(f.indices);
  out.batch_index = b;
  out.epoch = epoch_;
  lk.unlock();
  work_cv_.notify_all();  // the prefetch window moved
  return out;
}

// Batch memory: a fresh 100 MB tensor per batch (32 x 512 x 512 x 3 f32)
// costs ~25k page faults plus the kernel zeroing it, about as much as
// filling it, and the faults serialize on the process's mmap lock when
// several workers allocate. So storages are recycled: the pool keeps a
// reference to every storage it handed out (at most 2 * (prefetch + 2), enough
// for the batches in flight plus a couple held by the consumer); one whose
// use_count() is back to 1 has no other owner left (no tensor, view or
// autograd node can reach it, and only we could make a new reference), so it
// is reused with fresh tensor metadata.
// With pin_memory the storages are page-locked (cudaMallocHost) when a CUDA
// device is usable, for asynchronous host-to-device copies; recycling matters
// even more then, since pinning is expensive.
Tensor Loader::take_buffer(const Shape& shape) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * sizeof(float);
  std::shared_ptr<Storage> storage;
  for (const std::shared_ptr<Storage>& s : pool_)
    if (s.use_count() == 1 && s->bytes() == bytes) {
      // Pairs with the release in the consumer's last shared_ptr decrement:
      // its reads of the old batch happen before our writes.
      std::atomic_thread_fence(std::memory_order_acquire);
      storage = s;
      break;
    }
  if (!storage) {
    storage = std::make_shared<Storage>(bytes, Device::cpu(), opts_.pin_memory);
    ++buffers_allocated_;
    const size_t cap = 2 * (static_cast<size_t>(opts_.prefetch) + 2);
    if (pool_.size() < cap) {
      pool_.push_back(storage);
    } else {
      // Round-robin replacement: a storage the consumer keeps for good (or
      // one of the short last batch's size) leaves the pool eventually; the
      // consumer still owns it and frees it when done.
      pool_[pool_evict_] = storage;
      pool_evict_ = (pool_evict_ + 1) % cap;
    }
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->dtype = DType::F32;
  return Tensor(std::move(impl));
}

// A worker thread must not let an exception escape (std::terminate): what
// the per-sample handling below does not catch (an allocation failing in the
// bookkeeping) stops this worker and is rethrown by next() on the consumer's
// thread.
void Loader::work() {
  try {
    work_loop();
  } catch (...) {
    {
      std::lock_guard lk(mu_);
      if (!fatal_) fatal_ = std::current_exception();
    }
    ready_cv_.notify_all();
  }
}

void Loader::work_loop() {
  const int64_t B = opts_.batch;
  for (;;) {
    int64_t pos, b, sample, epoch;
    uint64_t gen;
    Tensor images, annotated;
    bool skip = false;
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] {
        return stop_ ||
               (active_ && next_pos_ < end_pos_ && next_pos_ / B < next_batch_ + opts_.prefetch);
      });
      if (stop_) return;
      pos = next_pos_++;
      b = pos / B;
      auto it = in_flight_.find(b);
      if (it == in_flight_.end()) {
        InFlight f;
        const int64_t rows = batch_rows(b);
        f.remaining = rows;
        f.indices.assign(order_.begin() + b * B, order_.begin() + b * B + rows);
        try {
          const Shape s{rows, shape_.height, shape_.width, shape_.channels};
          f.images = take_buffer(s);
          if (opts_.paired) f.annotated = take_buffer(s);
        } catch (...) {
          f.error = std::current_exception();
          f.error_context = "loader: cannot allocate batch " + std::to_string(b) + " of epoch " +
                            std::to_string(epoch_);
        }
        it = in_flight_.emplace(b, std::move(f)).first;
      }
      skip = static_cast<bool>(it->second.error);
      images = it->second.images;
      annotated = it->second.annotated;
      sample = order_[static_cast<size_t>(pos)];
      epoch = epoch_;
      gen = generation_;
    }

    std::exception_ptr err;
    if (!skip) {
      const int64_t row = pos - b * B;
      try {
        Generator rng(sample_seed(opts_.seed, epoch, global_position(pos)));
        float* plain = images.data<float>() + row * sample_numel_;
        float* ann = opts_.paired ? annotated.data<float>() + row * sample_numel_ : nullptr;
        transform_(sample, rng, plain, ann);
      } catch (...) {
        err = std::current_exception();
      }
    }

    bool ready = false;
    {
      std::lock_guard lk(mu_);
      if (gen != generation_) continue;  // an abandoned epoch
      InFlight& f = in_flight_.at(b);
      if (err && !f.error) {
        f.error = err;
        f.error_context = "loader: transform failed on sample " + std::to_string(sample) +
                          " (position " + std::to_string(pos) + ", batch " + std::to_string(b) +
                          ", epoch " + std::to_string(epoch) + ")";
      }
      ready = --f.remaining == 0;
    }
    if (ready) ready_cv_.notify_all();
  }
}

// ---- the ready-made cache transform ----

namespace {

struct CacheTransform {
  const ImageCache* cache;
  int64_t out_size;
  int channels;
  std::array<float, 256 * 3> lut;  // lut[v * channels + c]: normalized value of gray v

  void operator()(int64_t index, Generator&, float* out_plain, float* out_annotated) const {
    const int64_t S = cache->image_size();
    const uint8_t* src = cache->image(index).data();
    Image resized;
    if (out_size != S) {
      const Image img = cache->load(index);
      resized = out_size < S ? resize_area(img, out_size, out_size)
                             : resize_bilinear(img, out_size, out_size);
      src = resized.pixels.data();
    }
    const int64_t n = out_size * out_size;
    float* d = out_plain;
    if (channels == 3) {
      for (int64_t p = 0; p < n; ++p, d += 3) {
        const float* l = &lut[static_cast<size_t>(src[p]) * 3];
        d[0] = l[0];
        d[1] = l[1];
        d[2] = l[2];
      }
    } else {
      for (int64_t p = 0; p < n; ++p) d[p] = lut[src[p]];
    }
    if (out_annotated)
      std::memcpy(out_annotated, out_plain, static_cast<size_t>(n * channels) * sizeof(float));
  }
};

}  // namespace

SampleTransform make_cache_transform(const ImageCache& cache, int64_t out_size, int channels) {
  RZ_CHECK(channels == 1 || channels == 3, "make_cache_transform: channels must be 1 or 3, got ",
           channels);
  RZ_CHECK(out_size >= 1, "make_cache_transform: out_size must be >= 1, got ", out_size);
  RZ_CHECK(cache.image_size() >= 1, "make_cache_transform: the cache is not open");
  CacheTransform t{&cache, out_size, channels, {}};
  // The LUT comes from normalize() itself, so the values are bit-identical to
  // normalize(gray_to_rgb(img)) (or normalize(img) for one channel).
  Image ramp(1, 256, channels);
  for (int v = 0; v < 256; ++v)
    for (int c = 0; c < channels; ++c) ramp.at(0, v, c) = static_cast<uint8_t>(v);
  const ImageF norm = normalize(ramp);
  std::copy(norm.pixels.begin(), norm.pixels.end(), t.lut.begin());
  return t;
}

}  // namespace rz::data
