// Guarded device buffers for the GPU kernel tests: every buffer is padded on
// both sides with kGuard elements of 0xA5 bytes, and read() checks that the
// padding is intact (a kernel that writes outside its output fails the test).
// Raw cudaMalloc, so any element type works (int32 argmax has no Tensor dtype).
#pragma once

#if defined(RZ_HAVE_CUDA)
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/cuda_check.h"

namespace rz::gpu_test {

// Elements of sentinel on each side; 64 keeps get() 128-byte aligned for any
// element type, as the tensor-core convolutions require (16 bytes at least).
constexpr int64_t kGuard = 64;

template <typename T>
class Guarded {
 public:
  // n elements of 0xA5 bytes inside the guards.
  explicit Guarded(int64_t n) : n_(n) {
    RZ_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&base_), bytes()));
    RZ_CUDA_CHECK(cudaMemset(base_, 0xA5, bytes()));
  }
  // n = values.size() elements holding `values` inside the guards.
  explicit Guarded(const std::vector<T>& values) : Guarded(static_cast<int64_t>(values.size())) {
    upload(values);
  }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  ~Guarded() { cudaFree(base_); }  // never throws; a failed free only leaks

  T* get() { return base_ + kGuard; }
  int64_t size() const { return n_; }

  void upload(const std::vector<T>& values) {
    REQUIRE(static_cast<int64_t>(values.size()) == n_);
    RZ_CUDA_CHECK(
        cudaMemcpy(get(), values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice));
  }

  // Synchronizes the device, checks both guards and returns the n elements.
  std::vector<T> read() const {
    RZ_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<unsigned char> host(bytes());
    RZ_CUDA_CHECK(cudaMemcpy(host.data(), base_, bytes(), cudaMemcpyDeviceToHost));
    const size_t guard_bytes = kGuard * sizeof(T);
    bool intact = true;
    for (size_t i = 0; i < guard_bytes; ++i)
      intact = intact && host[i] == 0xA5 && host[host.size() - 1 - i] == 0xA5;
    CHECK_MESSAGE(intact, "a kernel wrote outside its output");
    std::vector<T> out(static_cast<size_t>(n_));
    if (n_ > 0) std::memcpy(out.data(), host.data() + guard_bytes, out.size() * sizeof(T));
    return out;
  }

 private:
  size_t bytes() const { return static_cast<size_t>(n_ + 2 * kGuard) * sizeof(T); }
  int64_t n_;
  T* base_ = nullptr;
};

}  // namespace rz::gpu_test
#endif
