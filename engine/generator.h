// Seeded random numbers with a fixed, documented algorithm (xoshiro256**
// seeded through splitmix64) so that a seed means the same numbers on every
// platform and standard library; std::normal_distribution does not promise that.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

namespace rz {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_with(seed); }
  void seed_with(uint64_t seed);

  uint64_t next_u64();
  double uniform();                       // [0, 1), 53 random bits
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal(double mean = 0.0, double std = 1.0);  // Box-Muller, one draw per call
  // Both Box-Muller outputs of one pair of uniforms (half the transcendental cost).
  std::pair<double, double> normal_pair(double mean = 0.0, double std = 1.0);
  uint64_t below(uint64_t n);            // uniform integer in [0, n), unbiased

  // The whole state, for checkpoints: restoring it continues the same stream.
  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_{};
};

}  // namespace rz
