// gemm_cpu against an independent naive triple loop in double: odd sizes, every
// transpose combination, alpha/beta cases (beta 0 over NaN), padded leading dimensions
// with sentinels in the padding, degenerate sizes, and thread-count determinism.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

struct Shape {
  int64_t M, N, K;
};

// A row-major matrix stored with padding columns that hold a sentinel.
template <typename T>
struct Mat {
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<T> data;
  Mat(int64_t r, int64_t c, int64_t pad, T fill) : rows(r), cols(c), ld(c + pad) {
    data.assign(std::size_t(std::max<int64_t>(r * ld, 1)), fill);
  }
  T& at(int64_t i, int64_t j) { return data[std::size_t(i * ld + j)]; }
  T at(int64_t i, int64_t j) const { return data[std::size_t(i * ld + j)]; }
};

template <typename T>
void fill_random(Mat<T>& m, std::mt19937& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t j = 0; j < m.cols; ++j) m.at(i, j) = T(dist(rng));
}

constexpr double kSentinel = 12345.0;

// Runs one case and checks every element of C against the double-precision loop, with
// an error bound proportional to the magnitudes that were summed.
template <typename T>
void check_case(Shape s, bool ta, bool tb, double alpha, double beta, int64_t pad,
                std::mt19937& rng, double rel_tol) {
  const int64_t M = s.M, N = s.N, K = s.K;
  Mat<T> A = ta ? Mat<T>(K, M, pad, T(kSentinel)) : Mat<T>(M, K, pad, T(kSentinel));
  Mat<T> B = tb ? Mat<T>(N, K, pad, T(kSentinel)) : Mat<T>(K, N, pad, T(kSentinel));
  Mat<T> C(M, N, pad, T(kSentinel));
  fill_random(A, rng);
  fill_random(B, rng);
  if (beta == 0.0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C.at(i, j) = std::numeric_limits<T>::quiet_NaN();
  } else {
    fill_random(C, rng);
  }
  const Mat<T> C0 = C;

  rz::gemm_cpu<T>(ta, tb, M, N, K, T(alpha), A.data.data(), A.ld, B.data.data(), B.ld, T(beta),
                  C.data.data(), C.ld);

  auto a = [&](int64_t i, int64_t k) { return double(ta ? A.at(k, i) : A.at(i, k)); };
  auto b = [&](int64_t k, int64_t j) { return double(tb ? B.at(j, k) : B.at(k, j)); };
  int64_t bad = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        sum += a(i, k) * b(k, j);
        mag += std::abs(a(i, k) * b(k, j));
      }
      double ref = alpha * sum;
      double bound = std::abs(alpha) * mag;
      if (beta != 0.0) {
        ref += beta * double(C0.at(i, j));
        bound += std::abs(beta * double(C0.at(i, j)));
      }
      const double got = double(C.at(i, j));
      const double tol = rel_tol * std::sqrt(double(K) + 2.0) * (bound + 1e-30);
      if (!(std::abs(got - ref) <= tol)) {
        if (bad++ < 3)
          FAIL_CHECK("C[" << i << "," << j << "] = " << got << ", expected " << ref << " (tol "
                          << tol << ")");
      }
    }
    for (int64_t j = N; j < C.ld; ++j) {
      if (C.at(i, j) != T(kSentinel) && bad++ < 3)
        FAIL_CHECK("padding C[" << i << "," << j << "] overwritten");
    }
  }
  CHECK(bad == 0);
}

const Shape kShapes[] = {{1, 1, 1},   {7, 13, 5}, {33, 65, 17},  {100, 3, 250}, {129, 257, 31},
                         {1, 70, 40}, {50, 1, 9}, {15, 33, 300}, {28, 64, 1},   {31, 47, 513}};

struct AlphaBeta {
  double alpha, beta;
};
const AlphaBeta kAlphaBeta[] = {{1.0, 0.0}, {1.0, 1.0}, {-0.75, 0.5}};

template <typename T>
void sweep(double rel_tol) {
  std::mt19937 rng(1234);
  int64_t pad = 0;
  for (const Shape& s : kShapes) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      for (const AlphaBeta& ab : kAlphaBeta) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(ab.alpha);
        CAPTURE(ab.beta);
        CAPTURE(pad);
        check_case<T>(s, ta, tb, ab.alpha, ab.beta, pad, rng, rel_tol);
        pad = (pad + 3) % 7;  // 0, 3, 6, 2, 5, 1, 4: most cases padded, some not
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm float matches naive loop: odd sizes, transposes, alpha/beta, padding") {
  sweep<float>(2e-6);
}

TEST_CASE("gemm double matches naive loop: odd sizes, transposes, alpha/beta, padding") {
  sweep<double>(1e-13);
}

TEST_CASE("gemm crosses every blocking boundary and threading layout") {
  std::mt19937 rng(99);
  // Several K blocks (float KC 1024, double KC 512) with beta applied exactly once; M
  // larger than MC; threads splitting M with a shared B block (tall M) or splitting N with
  // private B panels (short M, wide N), and N larger than NC (two B blocks).
  check_case<float>({37, 70, 2100}, false, true, 1.0, 0.5, 3, rng, 2e-6);
  check_case<float>({45, 33, 1500}, true, false, -1.0, 1.0, 0, rng, 2e-6);
  check_case<float>({401, 45, 700}, false, true, 1.0, 0.5, 2, rng, 2e-6);
  check_case<float>({20, 4200, 64}, true, true, 2.0, 0.0, 1, rng, 2e-6);
  check_case<double>({300, 37, 530}, true, true, 1.0, 1.0, 5, rng, 1e-13);
  check_case<double>({40, 2100, 64}, false, false, -1.0, 0.0, 0, rng, 1e-13);
}

TEST_CASE("gemm degenerate sizes only scale C by beta") {
  std::vector<float> C(12, 2.0f);
  const float a = 1.0f, b = 1.0f;
  SUBCASE("K = 0, beta 0.5 scales") {
    rz::gemm_cpu<float>(false, false, 3, 4, 0, 1.0f, &a, 1, &b, 4, 0.5f, C.data(), 4);
    for (float x : C) CHECK(x == 1.0f);
  }
  SUBCASE("K = 0, beta 0 clears NaN") {
    for (float& x : C) x = std::numeric_limits<float>::quiet_NaN();
    rz::gemm_cpu<float>(true, true, 3, 4, 0, 1.0f, &a, 3, &b, 1, 0.0f, C.data(), 4);
    for (float x : C) CHECK(x == 0.0f);
  }
  SUBCASE("alpha = 0, beta 0 clears NaN") {
    for (float& x : C) x = std::numeric_limits<float>::quiet_NaN();
    rz::gemm_cpu<float>(false, false, 3, 4, 1, 0.0f, &a, 1, &b, 4, 0.0f, C.data(), 4);
    for (float x : C) CHECK(x == 0.0f);
  }
  SUBCASE("alpha = 0 with beta 1 leaves C") {
    rz::gemm_cpu<float>(false, false, 3, 4, 1, 0.0f, &a, 1, &b, 4, 1.0f, C.data(), 4);
    for (float x : C) CHECK(x == 2.0f);
  }
  SUBCASE("M = 0 or N = 0 touches nothing") {
    rz::gemm_cpu<float>(false, false, 0, 4, 5, 1.0f, &a, 5, &b, 4, 0.0f, C.data(), 4);
    rz::gemm_cpu<float>(false, false, 3, 0, 5, 1.0f, &a, 5, &b, 1, 0.0f, C.data(), 4);
    for (float x : C) CHECK(x == 2.0f);
  }
}

TEST_CASE("gemm result is bitwise independent of the thread count") {
  // A tall problem (threads split M) and a short wide one (threads split N), both with
  // more than one K block.
  const Shape shapes[] = {{203, 190, 1333}, {20, 1000, 1100}};
  const int saved = omp_get_max_threads();
  for (const Shape& s : shapes) {
    const int64_t M = s.M, N = s.N, K = s.K;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> A(std::size_t(M * K)), B(std::size_t(K * N)), C0(std::size_t(M * N));
    for (float& x : A) x = dist(rng);
    for (float& x : B) x = dist(rng);
    for (float& x : C0) x = dist(rng);
    std::vector<float> ref;
    for (int threads : {1, 2, 3, 4}) {
      omp_set_num_threads(threads);
      std::vector<float> C = C0;
      rz::gemm_cpu<float>(false, true, M, N, K, 1.5f, A.data(), K, B.data(), K, 0.25f, C.data(), N);
      if (ref.empty()) {
        ref = C;
      } else {
        CAPTURE(M);
        CAPTURE(threads);
        CHECK(C == ref);
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("gemm epilogue: per-column scale and shift, then ReLU, on the finished C, across K blocks and partial tiles") {
  std::mt19937 rng(7);
  // K spans several K blocks (KC <= 1024 for float); M and N leave partial tiles.
  for (const Shape s : {Shape{37, 45, 2100}, Shape{5, 3, 7}, Shape{130, 66, 300}}) {
    for (const bool relu : {false, true}) {
      for (const bool affine : {false, true}) {
        CAPTURE(s.M);
        CAPTURE(s.K);
        CAPTURE(relu);
        CAPTURE(affine);
        Mat<float> A(s.M, s.K, 0, 0.0f), B(s.N, s.K, 0, 0.0f), C(s.M, s.N, 3, float(kSentinel));
        fill_random(A, rng);
        fill_random(B, rng);
        std::vector<float> scale(std::size_t(s.N)), shift(std::size_t(s.N));
        std::uniform_real_distribution<double> d(-2.0, 2.0);
        for (auto& v : scale) v = float(d(rng));
        for (auto& v : shift) v = float(d(rng));
        const rz::GemmEpilogue<float> ep{affine ? scale.data() : nullptr, affine ? shift.data() : nullptr, relu};
        rz::gemm_cpu<float>(false, true, s.M, s.N, s.K, 1.0f, A.data.data(), A.ld, B.data.data(), B.ld, 0.0f,
                            C.data.data(), C.ld, &ep);
        double worst = 0;
        int64_t negatives = 0;
        for (int64_t i = 0; i < s.M; ++i) {
          for (int64_t j = 0; j < s.N; ++j) {
            double acc = 0, mag = 0;
            for (int64_t k = 0; k < s.K; ++k) {
              acc += double(A.at(i, k)) * double(B.at(j, k));
              mag += std::abs(double(A.at(i, k)) * double(B.at(j, k)));
            }
            double want = affine ? acc * double(scale[std::size_t(j)]) + double(shift[std::size_t(j)]) : acc;
            if (relu) want = std::max(want, 0.0);
            const double tol = 1e-5 * (mag * (affine ? std::abs(double(scale[std::size_t(j)])) : 1.0) + 1.0);
            worst = std::max(worst, std::abs(double(C.at(i, j)) - want) / tol);
            if (C.at(i, j) < 0) ++negatives;
          }
          for (int64_t j = s.N; j < C.ld; ++j) CHECK(C.at(i, j) == float(kSentinel));  // padding untouched
        }
        CHECK(worst <= 1.0);
        if (relu) CHECK(negatives == 0);
        else CHECK(negatives > 0);
      }
    }
  }
}

namespace {
struct RowCtx {
  const Mat<float>* a;
  int64_t* calls;
};
void fill_rows(const void* ctx, int64_t row, int64_t k0, int64_t kc, float* dst) {
  const auto& c = *static_cast<const RowCtx*>(ctx);
  for (int64_t k = 0; k < kc; ++k) dst[k] = c.a->at(row, k0 + k);
#pragma omp atomic
  ++*c.calls;
}
}  // namespace

TEST_CASE("implicit gemm: rows from a source equal gemm on the stored matrix, bit for bit") {
  std::mt19937 rng(11);
  const int saved = omp_get_max_threads();
  // One K block and several (KC <= 1024), partial tiles, tall and wide thread layouts.
  for (const Shape s : {Shape{1, 1, 1}, Shape{37, 45, 2100}, Shape{203, 70, 300}, Shape{20, 1000, 130}}) {
    for (const bool tb : {false, true}) {
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(tb);
        CAPTURE(threads);
        Mat<float> A(s.M, s.K, 2, float(kSentinel));
        Mat<float> B = tb ? Mat<float>(s.N, s.K, 1, float(kSentinel)) : Mat<float>(s.K, s.N, 1, float(kSentinel));
        Mat<float> C(s.M, s.N, 3, float(kSentinel));
        fill_random(A, rng);
        fill_random(B, rng);
        fill_random(C, rng);
        Mat<float> want = C;
        std::vector<float> scale(std::size_t(s.N), 0.5f), shift(std::size_t(s.N), -0.1f);
        const rz::GemmEpilogue<float> ep{scale.data(), shift.data(), true};
        rz::gemm_cpu<float>(false, tb, s.M, s.N, s.K, 1.25f, A.data.data(), A.ld, B.data.data(), B.ld, 0.5f,
                            want.data.data(), want.ld, &ep);
        int64_t calls = 0;
        const RowCtx ctx{&A, &calls};
        rz::gemm_cpu_rows<float>(rz::GemmRowSource<float>{&fill_rows, &ctx}, tb, s.M, s.N, s.K, 1.25f,
                                 B.data.data(), B.ld, 0.5f, C.data.data(), C.ld, &ep);
        CHECK(C.data == want.data);  // padding included: untouched by both
        CHECK(calls >= s.M);         // every row was produced by the source
      }
    }
  }
  omp_set_num_threads(saved);
}
