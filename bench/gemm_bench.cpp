// gemm_bench: times rz::gemm_cpu on a square 1024^3 problem and on the im2col GEMMs of
// SE-ResNet convolutions at batch 2 (forward, backward-data and backward-weight
// orientations), and reports GFLOP/s against this machine's fp32 peak measured two ways.
//
//   gemm_bench [--threads N] [--reps N] [--no-flush]
//
// Each problem: 2 warm-up calls, then --reps timed calls; medians are reported. Before
// every timed call a 64 MiB buffer is rewritten so that A, B and C start from memory,
// not from a cache the previous call warmed (what a conv layer in a network sees).
// Nothing here asserts on time.
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

#if defined(__x86_64__) && defined(__GNUC__)
#define RZ_BENCH_X86 1
// GCC 12 flags the deliberately undefined registers inside some AVX-512 intrinsics as
// maybe-uninitialized (GCC bug 105593); the warning is about the header.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

#include "kernels/cpu/gemm.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Measured peak: every thread runs independent FMA dependency chains on registers (no
// memory traffic): more chains than latency x throughput (4 cycles x 1 zmm or 2 ymm FMAs
// per cycle on Zen 4) and few enough to stay in registers (16 of 32 zmm, 10 of 16 ymm).
// The widest ISA the CPU has is used, whatever this file was compiled for: the GEMM
// itself is built with AVX-512 where the host has it. Multiplier and addend are runtime
// values, so the compiler cannot fold the chains away. Each burst returns its seconds.
struct FmaIsa {
  const char* name;
  int lanes, chains;
  double (*burst)(int threads, int64_t iters);
};

#if defined(RZ_BENCH_X86)
__attribute__((target("avx512f"))) double burst_avx512(int threads, int64_t iters) {
  volatile float sink = 0.0f;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    const __m512 m = _mm512_set1_ps(0.999999f + float(omp_get_thread_num()) * 1e-9f);
    const __m512 c = _mm512_set1_ps(1e-7f);
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(float(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    }
    for (int i = 1; i < 16; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    alignas(64) float t[16];
    _mm512_store_ps(t, acc[0]);
#pragma omp critical
    sink = sink + t[0];
  }
  return seconds_since(t0);
}

__attribute__((target("avx2,fma"))) double burst_avx2(int threads, int64_t iters) {
  volatile float sink = 0.0f;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    const __m256 m = _mm256_set1_ps(0.999999f + float(omp_get_thread_num()) * 1e-9f);
    const __m256 c = _mm256_set1_ps(1e-7f);
    __m256 acc[10];
    for (int i = 0; i < 10; ++i) acc[i] = _mm256_set1_ps(float(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 10
      for (int i = 0; i < 10; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    }
    for (int i = 1; i < 10; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    alignas(32) float t[8];
    _mm256_store_ps(t, acc[0]);
#pragma omp critical
    sink = sink + t[0];
  }
  return seconds_since(t0);
}
#endif

double burst_scalar(int threads, int64_t iters) {
  volatile float sink = 0.0f;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    const float m = 0.999999f + float(omp_get_thread_num()) * 1e-9f, c = 1e-7f;
    float acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = float(i);
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = acc[i] * m + c;
    }
    float s = 0.0f;
    for (float x : acc) s += x;
#pragma omp critical
    sink = sink + s;
  }
  return seconds_since(t0);
}

FmaIsa pick_fma_isa() {
#if defined(RZ_BENCH_X86)
  if (__builtin_cpu_supports("avx512f")) return {"AVX-512 zmm", 16, 16, burst_avx512};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {"AVX2 ymm", 8, 10, burst_avx2};
  }
#endif
  return {"scalar", 1, 8, burst_scalar};
}

const FmaIsa kFma = pick_fma_isa();

// One burst of `iters` FMA steps on every thread; returns the flop rate it achieved.
double fma_rate(int threads, int64_t iters) {
  const double t = kFma.burst(threads, iters);
  return double(threads) * double(iters) * kFma.chains * kFma.lanes * 2.0 / t;
}

// FMA steps per thread that take about `seconds` at `rate` flop/s.
int64_t fma_iters_for(double seconds, double rate, int threads) {
  const double per_iter = double(threads) * kFma.chains * kFma.lanes * 2.0;
  return std::max<int64_t>(10'000, int64_t(seconds * rate / per_iter));
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

struct Timing {
  double seconds;    // median gemm time
  double peak_now;   // median FMA rate measured right after each run
  double peak_best;  // highest FMA rate measured after any run
  double fraction;   // median over runs of (gemm flop rate / FMA rate right after it)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Each timed run is followed by an FMA burst of about the same length, so every run is
// compared with the peak the machine delivered at that moment (on a shared VM the
// throughput of the second core comes and goes).
template <typename T>
Timing time_problem(const Problem& p, const Options& opt, double peak_hint, int threads,
                    std::vector<char>& junk) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  std::vector<T> A(std::size_t(p.M * p.K)), B(std::size_t(p.K * p.N)), C(std::size_t(p.M * p.N));
  for (T& x : A) x = dist(rng);
  for (T& x : B) x = dist(rng);
  const int64_t lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
  auto call = [&] {
    rz::gemm_cpu<T>(p.ta, p.tb, p.M, p.N, p.K, T(1), A.data(), lda, B.data(), ldb, T(0), C.data(),
                    p.N);
  };
  const double flops = 2.0 * double(p.M) * double(p.N) * double(p.K);
  call();
  call();
  std::vector<double> times, peaks, fractions;
  for (int r = 0; r < opt.reps; ++r) {
    if (opt.flush) flush_caches(junk);
    const auto t0 = Clock::now();
    call();
    const double t = seconds_since(t0);
    const double peak = fma_rate(threads, fma_iters_for(std::max(t, 2e-3), peak_hint, threads));
    times.push_back(t);
    peaks.push_back(peak);
    fractions.push_back(flops / t / peak);
  }
  const double best = *std::max_element(peaks.begin(), peaks.end());
  return {median(times), median(peaks), best, median(fractions)};
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

  double peak_measured = 0.0;
  const int64_t probe_iters = fma_iters_for(0.05, 1e11 * threads, threads);
  for (int trial = 0; trial < 5; ++trial) {
    peak_measured = std::max(peak_measured, fma_rate(threads, probe_iters));
  }
  const double mhz = cpu_mhz();
  // Zen 4 executes a 512-bit FMA as two halves on its two 256-bit FMA pipes, so AVX-512
  // does not double the per-cycle rate: 2 pipes x 8 fp32 lanes x 2 flops = 32 flop/cycle.
  const double flop_per_cycle = 32.0;
  const double peak_nominal = double(threads) * mhz * 1e6 * flop_per_cycle;

  std::printf("gemm_bench: %d thread(s), median of %d runs after 2 warm-ups, caches %s\n", threads,
              opt.reps, opt.flush ? "flushed (64 MiB rewritten) before each run" : "warm");
  std::printf(
      "fp32 peak, measured: %.1f GFLOP/s  (%d independent %s FMA chains per thread on "
      "registers, no memory, all %d threads; best of 5 bursts of ~50 ms)\n",
      peak_measured * 1e-9, kFma.chains, kFma.name, threads);
  std::printf(
      "fp32 peak, nominal:  %.1f GFLOP/s  (%d cores x %.0f MHz from /proc/cpuinfo x "
      "2 FMA pipes x 8 fp32 lanes x 2 flop; Zen 4 assumption: 2 x 256-bit FMA pipes, "
      "32 fp32 flop/cycle/core even with AVX-512; boost clocks exceed cpu MHz)\n",
      peak_nominal * 1e-9, threads, mhz);
  struct Result {
    const Problem* p;
    Timing t;
    double lane_scale;  // fp64 has half the lanes per register: its peak is half fp32's
  };
  std::vector<Result> results;
  std::vector<char> junk(opt.flush ? (64u << 20) : 0u);
  for (const Problem& p : kProblems) {
    results.push_back({&p, time_problem<float>(p, opt, peak_measured, threads, junk), 1.0});
  }
  for (const Problem& p : kProblems) {
    if (p.M != 1024) continue;
    results.push_back({&p, time_problem<double>(p, opt, peak_measured, threads, junk), 2.0});
  }

  // The denominator is the best FMA rate seen at any point of the run, so a contended
  // moment (on a shared VM the second core's throughput comes and goes) never inflates
  // the fraction; '%now' shows the same run against the rate measured right after it.
  double peak_best = peak_measured;
  for (const Result& r : results) peak_best = std::max(peak_best, r.t.peak_best);
  std::printf("fp32 peak, best FMA rate seen during the whole run: %.1f GFLOP/s\n",
              peak_best * 1e-9);
  std::printf(
      "columns: '%%peak' = achieved / that best measured peak; 'peak now' = FMA rate "
      "measured right after each run (median); '%%now' = median of achieved / peak now; "
      "'%%nom' = achieved / nominal peak\n");

  bool contended = false;
  double last_scale = 0.0;
  for (const Result& r : results) {
    const Problem& p = *r.p;
    const double ls = r.lane_scale;
    if (ls != last_scale) {
      std::printf("\n%-30s %3s %6s %6s %6s %10s %9s %7s %9s %7s %7s\n",
                  ls == 1.0 ? "problem (fp32)" : "problem (fp64; peaks halved)", "op", "M", "N",
                  "K", "median ms", "GFLOP/s", "%peak", "peak now", "%now", "%nom");
      last_scale = ls;
    }
    const double rate = 2.0 * double(p.M) * double(p.N) * double(p.K) / r.t.seconds;
    contended = contended || r.t.peak_now < 0.9 * peak_best;
    std::printf("%-30s %c%c  %6lld %6lld %6lld %10.3f %9.1f %6.1f%% %9.1f %6.1f%% %6.1f%%\n",
                p.name, p.ta ? 'T' : 'N', p.tb ? 'T' : 'N', (long long)p.M, (long long)p.N,
                (long long)p.K, r.t.seconds * 1e3, rate * 1e-9, 100.0 * rate / peak_best * ls,
                r.t.peak_now * 1e-9 / ls, 100.0 * r.t.fraction * ls,
                100.0 * rate / peak_nominal * ls);
  }
  if (contended) {
    std::printf(
        "\nnote: some rows ran while the machine delivered < 90%% of its best FMA rate "
        "(other load on the host); their %%peak understates the kernel, compare %%now.\n");
  }
  return 0;
}
