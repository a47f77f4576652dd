// The threaded batch loader: ordering, batching, worker threads, prefetch and
// determinism. What a sample *is* belongs to the caller's SampleTransform
// (read the cache, augment, draw annotations, normalize); the loader only
// decides which samples go into which batch, gives each one its own seeded
// Generator, and runs the transforms on worker threads.
//
// Determinism: for a given (seed, epoch)
//   * the order is a Fisher-Yates permutation of `samples` drawn from
//     Generator(mix(seed, epoch)) (identity without shuffle);
//   * the sample at epoch position p gets Generator(mix(seed, epoch, p));
// so batch contents depend on neither the worker count nor which worker ran
// a sample, and start_epoch(e, k) yields exactly batches k.. of an
// uninterrupted epoch e (what a resumed checkpoint needs: epoch + batch).
//
//   rz::data::Loader loader(train_indices, {.batch = 32, .seed = 1}, {512, 512, 3},
//                           rz::data::make_cache_transform(cache, 512, 3));
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     while (auto b = loader.next()) train_step(b->images, labels_of(b->indices));
//   }
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/generator.h"
#include "engine/storage.h"
#include "engine/tensor.h"

namespace rz::data {

class ImageCache;

struct LoaderOptions {
  int64_t batch = 32;
  bool shuffle = true;
  bool drop_last = false;  // drop the last batch when it would be short
  uint64_t seed = 0;
  int workers = 2;      // worker threads (>= 1)
  int prefetch = 4;     // batches in flight ahead of the consumer (>= 1)
  bool paired = false;  // also fill Batch::images_annotated (teacher/student)
  bool pin_memory = true;  // page-locked batch memory when a CUDA device is usable
  // Data-parallel sharding (PyTorch's DistributedSampler): every rank draws
  // the same epoch order and takes the positions p with p % shard_count ==
  // shard_rank. With drop_last each rank keeps (n / (shard_count * batch)) *
  // batch of them, so all ranks run the same number of batches and batch b of
  // the ranks together holds exactly batch b of one process at batch
  // shard_count * batch; without it the tail is neither padded nor dropped
  // (ranks differ by at most one sample). A sample's Generator is seeded by
  // its position in the whole epoch order, so its augmentation does not
  // depend on the number of ranks.
  int shard_rank = 0;
  int shard_count = 1;
};

// The shape of one transformed sample: out_plain points at H*W*C floats (HWC).
struct SampleShape {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 3;
};

// Fills one sample. `sample_index` is the value from the loader's sample list
// (e.g. an ImageCache index); `rng` is private to this call and seeded from
// (seed, epoch, position); out_plain / out_annotated point at H*W*C floats
// inside the batch tensors (out_annotated is nullptr unless paired). Called
// concurrently from several worker threads: it must not mutate shared state
// without its own locking. Whatever it throws reaches Loader::next().
using SampleTransform = std::function<void(int64_t sample_index, Generator& rng, float* out_plain,
                                           float* out_annotated)>;

// The tensors are the consumer's to keep; once it drops every reference (the
// Batch and any view of it), their memory is recycled for a later batch, so
// steady state allocates nothing. Keep the Tensor, never just data<float>().
struct Batch {
  Tensor images;                 // f32 [B, H, W, C] on the CPU
  Tensor images_annotated;       // f32 [B, H, W, C] when paired, else undefined
  std::vector<int64_t> indices;  // the sample_index of each row, in batch order
  int64_t batch_index = 0;       // 0-based within the epoch
  int64_t epoch = 0;
};

class Loader {
 public:
  // Starts the worker threads (idle until start_epoch). Throws rz::Error for an
  // empty sample list, batch < 1, workers < 1, prefetch < 1, a non-positive
  // shape or an empty transform.
  Loader(std::vector<int64_t> samples, LoaderOptions options, SampleShape shape,
         SampleTransform transform);
  // Stops the workers and joins them: a transform already running finishes,
  // nothing new starts. Safe at any point of an epoch.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Begins epoch `epoch` at batch `start_batch` (0, or the batch to resume
  // at; == batches_per_epoch() gives an empty epoch). Abandons whatever the
  // previous epoch still had in flight.
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  // The next batch in order, or std::nullopt at the end of the epoch (also
  // before the first start_epoch). A transform's exception is rethrown here
  // as rz::Error naming the sample, position, batch and epoch; the epoch is
  // then over (next() returns std::nullopt until start_epoch). A failure of a
  // worker thread outside any transform (its bookkeeping running out of
  // memory) is rethrown here too, on every later call: no exception ever
  // leaves a worker thread (that would be std::terminate).
  std::optional<Batch> next();

  int64_t batches_per_epoch() const;
  // Samples this rank reads per epoch (all of them in one process).
  int64_t size() const { return shard_size_; }
  const LoaderOptions& options() const { return opts_; }
  const SampleShape& shape() const { return shape_; }
  // This rank's sample order of an epoch (what batch b of that epoch holds
  // is order[b*batch, ...)): exposed for tests and for logging.
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Batch storages allocated so far: flat in steady state when the consumer
  // drops its batches (they are recycled), for tests and diagnostics.
  int64_t buffers_allocated() const { return buffers_allocated_.load(); }

 private:
  struct InFlight {
    Tensor images, annotated;
    std::vector<int64_t> indices;
    int64_t remaining = 0;     // samples not yet transformed
    std::exception_ptr error;  // first failure in this batch
    std::string error_context;
  };
  void work();
  void work_loop();
  int64_t batch_rows(int64_t b) const;
  Tensor take_buffer(const Shape& shape);  // under mu_

  // Position in the whole epoch order of this rank's position p.
  int64_t global_position(int64_t p) const { return p * opts_.shard_count + opts_.shard_rank; }
  const std::vector<int64_t> samples_;
  const LoaderOptions opts_;
  int64_t shard_size_ = 0;
  const SampleShape shape_;
  const SampleTransform transform_;
  const int64_t sample_numel_;

  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  bool stop_ = false;
  bool active_ = false;      // an epoch is being delivered
  uint64_t generation_ = 0;  // bumped by start_epoch; stale work is dropped
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;             // this epoch's samples in delivery order
  int64_t end_pos_ = 0;                    // positions [start, end_pos_) are delivered
  int64_t next_pos_ = 0;                   // next position a worker claims
  int64_t next_batch_ = 0;                 // next batch next() delivers
  std::map<int64_t, InFlight> in_flight_;  // by batch index, at most `prefetch`
  // Batch storages handed out before; one whose only owner is this list
  // again (the consumer dropped its Batch) is reused for a later batch.
  std::vector<std::shared_ptr<Storage>> pool_;
  size_t pool_evict_ = 0;  // next pool slot to replace when the pool is full
  std::atomic<int64_t> buffers_allocated_{0};
  std::exception_ptr fatal_;  // a worker's failure outside any sample; next() rethrows it
  std::vector<std::thread> workers_;
};

// A ready-made transform for tests, evaluation and the benchmarks: cache image
// `sample_index` -> resize to out_size x out_size (INTER_AREA when shrinking,
// bilinear when enlarging; none when sizes match) -> gray replicated to
// `channels` (1 or 3) -> ImageNet normalize (bit-identical to
// normalize(gray_to_rgb(img))). No augmentation; the rng is unused; a paired
// call gets the same image in out_annotated. `cache` must outlive the transform.
SampleTransform make_cache_transform(const ImageCache& cache, int64_t out_size, int channels = 3);

}  // namespace rz::data
