// Exceptions out of parallel regions. An exception that leaves an OpenMP
// parallel region or a std::thread calls std::terminate: the process aborts
// with no message and nothing written. Every parallel loop whose body can
// throw catches into a FirstError and rethrows after the region, on the
// calling thread, where the CLI reports it the usual way.
//
//   rz::FirstError err;
//   #pragma omp parallel for
//   for (int64_t i = 0; i < n; ++i)
//     err.run(i, [&] { work(i); });
//   err.rethrow();   // the error of the lowest index that failed
//
// Every item runs, and the lowest failing index wins, so the message does
// not depend on thread timing or scheduling.
#pragma once

#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>

namespace rz {

class FirstError {
 public:
  template <typename F>
  void run(int64_t index, F&& body) noexcept {
    try {
      body();
    } catch (...) {
      capture(index, std::current_exception());
    }
  }
  void capture(int64_t index, std::exception_ptr e) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_ || index < index_) {
      error_ = std::move(e);
      index_ = index;
    }
    failed_flag_ = true;
  }
  bool failed() const noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_flag_;
  }
  // Rethrows the captured exception, if any, on the calling thread.
  void rethrow() {
    std::exception_ptr e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      e = error_;
    }
    if (e) std::rethrow_exception(e);
  }

 private:
  mutable std::mutex mu_;
  std::exception_ptr error_;
  int64_t index_ = std::numeric_limits<int64_t>::max();
  bool failed_flag_ = false;
};

}  // namespace rz
