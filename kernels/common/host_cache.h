// Host-side memo tables for launchers: what a launcher would otherwise ask the
// CUDA runtime or driver again on every call (function attributes, encoded
// TMA descriptors, per-device setup). Plain C++ with no CUDA types, so the CPU
// tests exercise the exact caching rules the launchers use. Both classes are
// thread-safe (one mutex each; the critical sections are a few lookups).
#pragma once

#include <array>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace rz {

// One value per CUDA device index in [0, MaxDevices), computed by the first
// get() for that device and kept for the life of the object. make() returns
// {value, keep}: a value with keep == false (a transient failure) is returned
// but not stored, so the next call runs make() again; an exception from
// make() stores nothing and propagates. make() runs under the lock, so it
// runs at most once at a time and never twice for a kept device. Indices
// outside the range are not cached: make() runs on every call.
template <typename V, int MaxDevices = 64>
class PerDeviceMemo {
 public:
  template <typename Make>
  V get(int device, Make&& make) {
    if (device < 0 || device >= MaxDevices) return make().first;
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<V>& slot = values_[static_cast<size_t>(device)];
    if (slot) return *slot;
    std::pair<V, bool> r = make();
    if (r.second) slot = r.first;
    return r.first;
  }
  // Whether get() has kept a value for `device`.
  bool kept(int device) const {
    if (device < 0 || device >= MaxDevices) return false;
    std::lock_guard<std::mutex> lock(mu_);
    return values_[static_cast<size_t>(device)].has_value();
  }

 private:
  mutable std::mutex mu_;
  std::array<std::optional<V>, MaxDevices> values_{};
};

// A bounded map from K to V that forgets the least recently used entry when
// full. find() counts as a use. Hash hashes K; K needs operator==.
template <typename K, typename V, typename Hash>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}

  // A copy of the value stored under `key`, if any (and makes it the newest).
  std::optional<V> find(const K& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }
  // Stores `value` under `key` (replacing an existing one) as the newest
  // entry, evicting the oldest when the cache is over capacity.
  void put(const K& key, const V& value) {
    std::lock_guard<std::mutex> lock(mu_);
    if (const auto it = index_.find(key); it != index_.end()) {
      it->second->second = value;
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.emplace_front(key, value);
    index_.emplace(key, order_.begin());
    if (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return order_.size();
  }
  size_t capacity() const { return capacity_; }

 private:
  using Entry = std::pair<K, V>;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> order_;  // newest first
  std::unordered_map<K, typename std::list<Entry>::iterator, Hash> index_;
};

}  // namespace rz
