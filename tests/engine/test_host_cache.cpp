// The host block cache (engine/storage.h): a freed block of 64 KiB or more is
// kept and handed to the next allocation of its rounded size, so a training
// step's activations stop costing fresh page faults after the first step.
#include <doctest/doctest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "engine/storage.h"
#include "engine/tensor.h"

using namespace rz;

TEST_CASE("host cache: a freed large block is reused for the same size; small ones and other sizes are not") {
  host_cache_release();
  const HostCacheStats before = host_cache_stats();
  if (before.limit_bytes == 0) {
    // AddressSanitizer builds (or RZ_HOST_CACHE_MB=0): every block goes back to the C library.
    { Tensor t = Tensor::empty({1 << 18}, DType::F32); }
    CHECK(host_cache_stats().cached_bytes == 0);
    return;
  }
  const void* first = nullptr;
  {
    Tensor t = Tensor::empty({1 << 18}, DType::F32);  // 1 MiB
    first = t.raw_data();
  }
  const HostCacheStats held = host_cache_stats();
  CHECK(held.cached_bytes == size_t{1} << 20);
  {
    Tensor again = Tensor::zeros({1 << 18}, DType::F32);
    CHECK(again.raw_data() == first);  // the same block
    CHECK(host_cache_stats().hits == held.hits + 1);
    CHECK(host_cache_stats().cached_bytes == 0);
    // zeros() still zeroes a reused block.
    const float* p = again.data<float>();
    bool all_zero = true;
    for (int64_t i = 0; i < again.numel(); ++i) all_zero = all_zero && p[i] == 0.0f;
    CHECK(all_zero);
  }
  // A different size misses; a small tensor does not touch the cache at all.
  {
    Tensor other = Tensor::empty({(1 << 18) + 4096}, DType::F32);
    CHECK(other.raw_data() != first);
  }
  const HostCacheStats mid = host_cache_stats();
  { Tensor small = Tensor::empty({100}, DType::F32); }
  CHECK(host_cache_stats().hits == mid.hits);
  CHECK(host_cache_stats().misses == mid.misses);
  CHECK(host_cache_stats().cached_bytes == mid.cached_bytes);
  host_cache_release();
  CHECK(host_cache_stats().cached_bytes == 0);
}

TEST_CASE("host cache: threads allocating and freeing at once each get whole, private blocks") {
  host_cache_release();
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 1);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([k, &ok] {
      for (int i = 0; i < 200; ++i) {
        Tensor t = Tensor::empty({(1 << 15) * (1 + i % 3)}, DType::F32);
        float* p = t.data<float>();
        const float v = static_cast<float>(k * 1000 + i);
        for (int64_t j = 0; j < t.numel(); j += 1024) p[j] = v;
        std::this_thread::yield();
        for (int64_t j = 0; j < t.numel(); j += 1024)
          if (p[j] != v) ok[static_cast<size_t>(k)] = 0;  // another thread wrote into this block
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k) CHECK(ok[static_cast<size_t>(k)] == 1);
  CHECK(host_cache_stats().cached_bytes <= host_cache_stats().limit_bytes);
  host_cache_release();
}
