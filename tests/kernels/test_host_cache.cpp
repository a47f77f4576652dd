// The launchers' host-side memo tables (kernels/common/host_cache.h):
// PerDeviceMemo computes once per device and keeps only what make() marks
// final, under concurrent first use too; LruCache is bounded and forgets the
// least recently used entry.
#include <doctest/doctest.h>

#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/common/host_cache.h"

using namespace rz;

namespace {
struct IntHash {
  size_t operator()(int v) const { return static_cast<size_t>(v); }
};
}  // namespace

TEST_CASE("host cache: PerDeviceMemo computes once per device and keeps only final values") {
  PerDeviceMemo<int, 4> memo;
  int calls = 0;
  auto make = [&](int v, bool keep) {
    return [&calls, v, keep] {
      ++calls;
      return std::pair{v, keep};
    };
  };
  CHECK_FALSE(memo.kept(0));
  CHECK(memo.get(0, make(10, true)) == 10);
  CHECK(memo.get(0, make(99, true)) == 10);  // kept: make() not run again
  CHECK(calls == 1);
  CHECK(memo.kept(0));
  CHECK_FALSE(memo.kept(1));

  // A transient result is returned, not kept: the next call runs make() again.
  CHECK(memo.get(1, make(-1, false)) == -1);
  CHECK_FALSE(memo.kept(1));
  CHECK(memo.get(1, make(11, true)) == 11);
  CHECK(memo.get(1, make(98, true)) == 11);
  CHECK(calls == 3);

  // An exception keeps nothing and propagates.
  CHECK_THROWS_AS(memo.get(2, []() -> std::pair<int, bool> { throw std::runtime_error("x"); }),
                  std::runtime_error);
  CHECK_FALSE(memo.kept(2));
  CHECK(memo.get(2, make(12, true)) == 12);

  // Indices outside [0, MaxDevices): computed on every call, never kept.
  CHECK(memo.get(4, make(40, true)) == 40);
  CHECK(memo.get(4, make(41, true)) == 41);
  CHECK(memo.get(-1, make(-5, true)) == -5);
  CHECK_FALSE(memo.kept(4));
  CHECK_FALSE(memo.kept(-1));
}

TEST_CASE("host cache: PerDeviceMemo runs make() once per device under concurrent first use") {
  PerDeviceMemo<int, 8> memo;
  std::atomic<int> calls[8] = {};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const unsigned dev = static_cast<unsigned>(t + i) % 8u;
        const int want = static_cast<int>(dev) * 100;
        const int v = memo.get(static_cast<int>(dev), [&calls, dev, want] {
          calls[dev].fetch_add(1);
          return std::pair{want, true};
        });
        if (v != want) wrong.fetch_add(1);
      }
    });
  for (std::thread& th : threads) th.join();
  CHECK(wrong.load() == 0);
  for (int d = 0; d < 8; ++d) {
    CAPTURE(d);
    CHECK(calls[d].load() == 1);
    CHECK(memo.kept(d));
  }
}

TEST_CASE("host cache: LruCache is bounded and evicts the least recently used entry") {
  LruCache<int, std::string, IntHash> cache(3);
  CHECK(cache.capacity() == 3);
  CHECK_FALSE(cache.find(1).has_value());
  cache.put(1, "a");
  cache.put(2, "b");
  cache.put(3, "c");
  CHECK(cache.size() == 3);
  CHECK(cache.find(1) == std::string("a"));  // 1 is now the newest: 2 is the oldest
  cache.put(4, "d");
  CHECK(cache.size() == 3);
  CHECK_FALSE(cache.find(2).has_value());
  CHECK(cache.find(3) == std::string("c"));
  CHECK(cache.find(4) == std::string("d"));
  CHECK(cache.find(1) == std::string("a"));

  // put() on a present key replaces the value and refreshes it, without growing.
  cache.put(3, "C");  // order now 3, 1, 4 (newest first)
  CHECK(cache.size() == 3);
  cache.put(5, "e");  // evicts 4
  CHECK_FALSE(cache.find(4).has_value());
  CHECK(cache.find(3) == std::string("C"));
  CHECK(cache.find(1) == std::string("a"));
  CHECK(cache.find(5) == std::string("e"));

  LruCache<int, int, IntHash> one(0);  // capacity is at least 1
  CHECK(one.capacity() == 1);
  one.put(1, 1);
  one.put(2, 2);
  CHECK(one.size() == 1);
  CHECK_FALSE(one.find(1).has_value());
  CHECK(one.find(2) == 2);
}

TEST_CASE("host cache: LruCache stays consistent under concurrent use") {
  LruCache<int, int, IntHash> cache(16);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const int key = (i * 7 + t) % 40;
        if (const std::optional<int> v = cache.find(key)) {
          if (*v != key * 3) wrong.fetch_add(1);
        } else {
          cache.put(key, key * 3);
        }
      }
    });
  for (std::thread& th : threads) th.join();
  CHECK(wrong.load() == 0);
  CHECK(cache.size() <= 16);
}
