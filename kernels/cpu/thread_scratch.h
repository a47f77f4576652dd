// Per-thread scratch for OpenMP regions, allocated before the region.
// Nothing inside a parallel region may throw (an exception leaving it calls
// std::terminate), and an allocation can: so a region that needs a buffer per
// thread takes its slice of one allocation made, and possibly failing, on
// the calling thread.
//
//   ThreadScratch<double> scratch(C);        // before the region
//   #pragma omp parallel
//   { double* acc = scratch.mine(); ... }    // this thread's C values
#pragma once

#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rz {

template <typename T>
class ThreadScratch {
 public:
  explicit ThreadScratch(int64_t per_thread)
      : per_thread_(per_thread), buf_(static_cast<std::size_t>(per_thread * omp_get_max_threads())) {}
  // This thread's slice (thread 0's when the region runs serially).
  T* mine() { return buf_.data() + static_cast<int64_t>(omp_get_thread_num()) * per_thread_; }
  // This thread's slice, zero-filled.
  T* zeroed() {
    T* p = mine();
    for (int64_t i = 0; i < per_thread_; ++i) p[i] = T(0);
    return p;
  }

 private:
  int64_t per_thread_;
  std::vector<T> buf_;
};

}  // namespace rz
