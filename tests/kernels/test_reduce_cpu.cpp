// CPU twins of the CUDA reductions against explicit formulas, and the
// multi-tensor chunk table lookup (locate_chunk, shared with the CUDA kernels)
// against a direct enumeration of every tensor's chunks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/reduce.h"
#if defined(RZ_HAVE_CUDA)
#include "kernels/cuda/optim.cuh"
#endif

using namespace rz;

TEST_CASE("col_sum_cpu and bias_add_cpu on odd shapes") {
  for (int64_t rows : {1, 3, 37}) {
    for (int64_t cols : {1, 11, 67}) {
      std::vector<double> dy(static_cast<size_t>(rows * cols)), b(static_cast<size_t>(cols));
      for (size_t i = 0; i < dy.size(); ++i) dy[i] = std::sin(0.37 * static_cast<double>(i)) * 3.0;
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.25 * static_cast<double>(i) - 1.0;
      std::vector<double> db(static_cast<size_t>(cols), -99.0);  // overwritten, not added to
      col_sum_cpu(dy.data(), rows, cols, db.data());
      for (int64_t c = 0; c < cols; ++c) {
        double s = 0;
        for (int64_t r = 0; r < rows; ++r)
          s += std::sin(0.37 * static_cast<double>(r * cols + c)) * 3.0;
        CHECK(db[static_cast<size_t>(c)] == doctest::Approx(s).epsilon(1e-12));
      }
      std::vector<double> y = dy;
      bias_add_cpu(y.data(), b.data(), rows, cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          CHECK(y[static_cast<size_t>(r * cols + c)] ==
                dy[static_cast<size_t>(r * cols + c)] + b[static_cast<size_t>(c)]);
    }
  }
}

TEST_CASE("sum_squares_cpu matches n(n+1)(2n+1)/6") {
  for (int64_t n : {0, 1, 7, 100001}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i + 1);
    const double nn = static_cast<double>(n);
    CHECK(sum_squares_cpu(x.data(), n) ==
          doctest::Approx(nn * (nn + 1) * (2 * nn + 1) / 6).epsilon(1e-12));
  }
}

TEST_CASE("sum_squares_cpu matches a direct loop on signed values") {
  for (int64_t n : {2, 37, 99991}) {
    std::vector<float> x(static_cast<size_t>(n));
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = static_cast<float>(std::cos(1.7 * static_cast<double>(i)) * 4.0);
      x[static_cast<size_t>(i)] = v;
      ref += static_cast<double>(v) * static_cast<double>(v);
    }
    CHECK(sum_squares_cpu(x.data(), n) == doctest::Approx(ref).epsilon(1e-13));
  }
}

#if defined(RZ_HAVE_CUDA)
TEST_CASE("locate_chunk maps every chunk to its tensor and element range") {
  // Includes empty tensors, a tensor of exactly one chunk and boundary sizes.
  const std::vector<int64_t> sizes{4097, 0, 1, kMultiTensorChunk, 0, 0, 3 * kMultiTensorChunk + 5,
                                   9};
  const int count = static_cast<int>(sizes.size());
  std::vector<int64_t> offsets(sizes.size() + 1);
  const int64_t total = multi_tensor_chunk_offsets(sizes.data(), count, offsets.data());
  TensorList list;
  list.sizes = sizes.data();
  list.chunk_offsets = offsets.data();
  list.count = count;
  list.total_chunks = total;
  int64_t c = 0;
  for (int t = 0; t < count; ++t) {
    for (int64_t begin = 0; begin < sizes[static_cast<size_t>(t)];
         begin += kMultiTensorChunk, ++c) {
      const ChunkRange r = locate_chunk(list, c);
      CAPTURE(c);
      CHECK(r.tensor == t);
      CHECK(r.begin == begin);
      CHECK(r.end == std::min(begin + kMultiTensorChunk, sizes[static_cast<size_t>(t)]));
    }
  }
  CHECK(c == total);
  CHECK(total == 2 + 1 + 1 + 4 + 1);
}
#endif
