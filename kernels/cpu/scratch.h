// Grow-only, 64-byte aligned scratch memory for the CPU kernels: one buffer
// per calling thread and role, so steady-state calls allocate nothing and
// never touch fresh pages. Contents are uninitialized.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace rz {

template <typename T>
class Scratch {
 public:
  static constexpr std::size_t kAlign = 64;
  T* get(std::size_t n) {
    if (n > cap_) {
      const std::size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
      void* p = std::aligned_alloc(kAlign, bytes);
      if (p == nullptr) throw std::bad_alloc();
      buf_.reset(static_cast<T*>(p));
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> buf_;
  std::size_t cap_ = 0;
};

// The calling thread's scratch for one role (Role: any tag type).
template <typename T, typename Role>
Scratch<T>& thread_scratch() {
  thread_local Scratch<T> s;
  return s;
}

}  // namespace rz
