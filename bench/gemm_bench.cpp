// gemm_bench: times rz::gemm_cpu on a square 1024^3 problem and on the im2col GEMMs of
// SE-ResNet convolutions at batch 2 (forward, backward-data and backward-weight
// orientations), and reports GFLOP/s against this machine's fp32 peak measured two ways.
//
//   gemm_bench [--threads N] [--reps N] [--no-flush]
//
// Each problem: 2 warm-up calls, then --reps timed calls; the median is reported. Before
// every timed call a 64 MiB buffer is rewritten so that A, B and C start from memory,
// not from a cache the previous call warmed (what a conv layer in a network sees).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
// GCC 12 flags the deliberately undefined registers inside the AVX-512 shuffle
// intrinsics as maybe-uninitialized (GCC bug 105593); the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "kernels/cpu/gemm.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Measured peak: every thread runs kChains independent FMA dependency chains on
// registers (no memory traffic). kChains exceeds latency x throughput (4 cycles x 1 zmm
// FMA per cycle on Zen 4; 4 x 2 ymm on AVX2 parts), so the FMA pipes stay saturated.
constexpr int kChains = 16;

#if defined(__AVX512F__)
using FmaReg = __m512;
constexpr int kFmaLanes = 16;
inline FmaReg fma_set1(float x) { return _mm512_set1_ps(x); }
inline FmaReg fma_op(FmaReg a, FmaReg b, FmaReg c) { return _mm512_fmadd_ps(a, b, c); }
inline float fma_sum(FmaReg a) {
  alignas(64) float t[16];
  _mm512_store_ps(t, a);
  float s = 0;
  for (float x : t) s += x;
  return s;
}
constexpr const char* kFmaIsa = "AVX-512 zmm";
#elif defined(__AVX2__) && defined(__FMA__)
using FmaReg = __m256;
constexpr int kFmaLanes = 8;
inline FmaReg fma_set1(float x) { return _mm256_set1_ps(x); }
inline FmaReg fma_op(FmaReg a, FmaReg b, FmaReg c) { return _mm256_fmadd_ps(a, b, c); }
inline float fma_sum(FmaReg a) {
  alignas(32) float t[8];
  _mm256_store_ps(t, a);
  float s = 0;
  for (float x : t) s += x;
  return s;
}
constexpr const char* kFmaIsa = "AVX2 ymm";
#else
using FmaReg = float;
constexpr int kFmaLanes = 1;
inline FmaReg fma_set1(float x) { return x; }
inline FmaReg fma_op(FmaReg a, FmaReg b, FmaReg c) { return a * b + c; }
inline float fma_sum(FmaReg a) { return a; }
constexpr const char* kFmaIsa = "scalar";
#endif

double measured_peak_flops(int threads) {
  const int64_t iters = 20'000'000;
  volatile float sink = 0.0f;
  double best = 0.0;
  for (int trial = 0; trial < 3; ++trial) {
    const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      // Multiplier and addend are runtime values the compiler cannot fold away.
      const FmaReg m = fma_set1(0.999999f + float(omp_get_thread_num()) * 1e-9f);
      const FmaReg c = fma_set1(1e-7f);
      FmaReg acc[kChains];
      for (int i = 0; i < kChains; ++i) acc[i] = fma_set1(float(i));
      for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < kChains; ++i) acc[i] = fma_op(acc[i], m, c);
      }
      float s = 0.0f;
      for (int i = 0; i < kChains; ++i) s += fma_sum(acc[i]);
#pragma omp critical
      sink = sink + s;
    }
    const double t = seconds_since(t0);
    best = std::max(best, double(threads) * double(iters) * kChains * kFmaLanes * 2.0 / t);
  }
  (void)sink;
  return best;
}

double cpu_mhz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return std::atof(line.c_str() + colon + 1);
    }
  }
  return 0.0;
}

struct Problem {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
};

// im2col GEMMs at batch 2 (NHWC activations, KRSC weights):
//   forward      Y[NHW, Cout]    = Xcol[NHW, RSC] * W[Cout, RSC]^T      (trans_b)
//   backward dX  dXcol[NHW, RSC] = dY[NHW, Cout] * W[Cout, RSC]         (no transposes)
//   backward dW  dW[Cout, RSC]   = dY[NHW, Cout]^T * Xcol[NHW, RSC]     (trans_a)
const Problem kProblems[] = {
    {"square 1024^3 NN", false, false, 1024, 1024, 1024},
    {"square 1024^3 NT", false, true, 1024, 1024, 1024},
    {"square 1024^3 TN", true, false, 1024, 1024, 1024},
    {"square 1024^3 TT", true, true, 1024, 1024, 1024},
    {"l1 3x3 64->64 @64x64 fwd", false, true, 2 * 64 * 64, 64, 9 * 64},
    {"l1 3x3 64->64 @64x64 dX", false, false, 2 * 64 * 64, 9 * 64, 64},
    {"l1 3x3 64->64 @64x64 dW", true, false, 64, 9 * 64, 2 * 64 * 64},
    {"l2 1x1 128->512 @32x32 fwd", false, true, 2 * 32 * 32, 512, 128},
    {"l2 1x1 128->512 @32x32 dX", false, false, 2 * 32 * 32, 128, 512},
    {"l2 1x1 128->512 @32x32 dW", true, false, 512, 128, 2 * 32 * 32},
    {"l3 3x3 256->256 @16x16 fwd", false, true, 2 * 16 * 16, 256, 9 * 256},
    {"l3 3x3 256->256 @16x16 dX", false, false, 2 * 16 * 16, 9 * 256, 256},
    {"l3 3x3 256->256 @16x16 dW", true, false, 256, 9 * 256, 2 * 16 * 16},
    {"l4 1x1 1024->2048 @8x8 fwd", false, true, 2 * 8 * 8, 2048, 1024},
    {"l4 1x1 1024->2048 @8x8 dX", false, false, 2 * 8 * 8, 1024, 2048},
    {"l4 1x1 1024->2048 @8x8 dW", true, false, 2048, 1024, 2 * 8 * 8},
};

struct Options {
  int threads = 0;
  int reps = 15;
  bool flush = true;
};

// Rewrites a buffer larger than L3 so the next call starts with cold caches.
void flush_caches(std::vector<char>& junk) {
  static char v = 1;
  std::memset(junk.data(), ++v, junk.size());
}

template <typename T>
double time_problem(const Problem& p, const Options& opt, std::vector<char>& junk) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  std::vector<T> A(std::size_t(p.M * p.K)), B(std::size_t(p.K * p.N)), C(std::size_t(p.M * p.N));
  for (T& x : A) x = dist(rng);
  for (T& x : B) x = dist(rng);
  const int64_t lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
  auto call = [&] {
    rz::gemm_cpu<T>(p.ta, p.tb, p.M, p.N, p.K, T(1), A.data(), lda, B.data(), ldb, T(0),
                    C.data(), p.N);
  };
  call();
  call();
  std::vector<double> times;
  for (int r = 0; r < opt.reps; ++r) {
    if (opt.flush) flush_caches(junk);
    const auto t0 = Clock::now();
    call();
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void usage() {
  std::fprintf(stderr, "usage: gemm_bench [--threads N] [--reps N] [--no-flush]\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--reps") && i + 1 < argc) {
      const int v = std::atoi(argv[++i]);
      if (v < 1) {
        usage();
        return 2;
      }
      (a == "--threads" ? opt.threads : opt.reps) = v;
    } else if (a == "--no-flush") {
      opt.flush = false;
    } else {
      usage();
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
  const int threads = omp_get_max_threads();

  const double peak_measured = measured_peak_flops(threads);
  const double mhz = cpu_mhz();
  // Zen 4 executes a 512-bit FMA as two halves on its two 256-bit FMA pipes, so AVX-512
  // does not double the per-cycle rate: 2 pipes x 8 fp32 lanes x 2 flops = 32 flop/cycle.
  const double flop_per_cycle = 32.0;
  const double peak_nominal = double(threads) * mhz * 1e6 * flop_per_cycle;

  std::printf("gemm_bench: %d thread(s), median of %d runs after 2 warm-ups, caches %s\n",
              threads, opt.reps, opt.flush ? "flushed (64 MiB rewritten) before each run"
                                           : "warm");
  std::printf("fp32 peak, measured: %.1f GFLOP/s  (%d independent %s FMA chains per thread, "
              "registers only, all %d threads, best of 3)\n",
              peak_measured * 1e-9, kChains, kFmaIsa, threads);
  std::printf("fp32 peak, nominal:  %.1f GFLOP/s  (%d cores x %.0f MHz from /proc/cpuinfo x "
              "2 FMA pipes x 8 fp32 lanes x 2 flop; Zen 4 assumption: 2 x 256-bit FMA pipes, "
              "32 fp32 flop/cycle/core even with AVX-512)\n",
              peak_nominal * 1e-9, threads, mhz);
  std::printf("%% peak columns: achieved / measured peak, achieved / nominal peak\n\n");

  std::vector<char> junk(opt.flush ? (64u << 20) : 0u);
  std::printf("%-30s %3s %6s %6s %6s %10s %9s %8s %8s\n", "problem (fp32)", "op", "M", "N", "K",
              "median ms", "GFLOP/s", "%meas", "%nom");
  for (const Problem& p : kProblems) {
    const double t = time_problem<float>(p, opt, junk);
    const double gflops = 2.0 * double(p.M) * double(p.N) * double(p.K) / t * 1e-9;
    std::printf("%-30s %c%c  %6lld %6lld %6lld %10.3f %9.1f %7.1f%% %7.1f%%\n", p.name,
                p.ta ? 'T' : 'N', p.tb ? 'T' : 'N', (long long)p.M, (long long)p.N,
                (long long)p.K, t * 1e3, gflops, 100.0 * gflops * 1e9 / peak_measured,
                100.0 * gflops * 1e9 / peak_nominal);
  }

  // fp64 runs at half the fp32 lane count, so its peak is half the fp32 peak.
  std::printf("\n%-30s %3s %6s %6s %6s %10s %9s %8s %8s\n", "problem (fp64)", "op", "M", "N",
              "K", "median ms", "GFLOP/s", "%meas/2", "%nom/2");
  for (const Problem& p : kProblems) {
    if (p.M != 1024) continue;
    const double t = time_problem<double>(p, opt, junk);
    const double gflops = 2.0 * double(p.M) * double(p.N) * double(p.K) / t * 1e-9;
    std::printf("%-30s %c%c  %6lld %6lld %6lld %10.3f %9.1f %7.1f%% %7.1f%%\n", p.name,
                p.ta ? 'T' : 'N', p.tb ? 'T' : 'N', (long long)p.M, (long long)p.N,
                (long long)p.K, t * 1e3, gflops, 200.0 * gflops * 1e9 / peak_measured,
                200.0 * gflops * 1e9 / peak_nominal);
  }
  return 0;
}
