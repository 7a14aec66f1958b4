// Seeded random numbers that are bit-identical on every machine: xoshiro256**
// for bits, our own Box-Muller for normals (std:: distributions differ between
// standard libraries, so they are never used for anything that must repeat).
#pragma once

#include <array>
#include <cstdint>

namespace spruce {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_(seed); }
  void seed_(uint64_t seed);

  uint64_t next_u64();
  /// Uniform in [0, 1) with 24 random bits (exact in float).
  float uniform();
  /// Uniform in [lo, hi).
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box-Muller; the second value of each pair is cached).
  float normal();
  /// Uniform integer in [0, n), without modulo bias. n must be > 0.
  uint64_t below(uint64_t n);

  /// The complete state, for checkpoints.
  struct State {
    std::array<uint64_t, 4> s{};
    bool has_spare = false;
    float spare = 0.f;
  };
  State state() const { return state_; }
  void set_state(const State& st) { state_ = st; }

 private:
  State state_;
};

/// The process-wide generator used by layer initialisation when none is given.
Generator& default_generator();
/// Reseeds the default generator (tools call this once with --seed).
void manual_seed(uint64_t seed);

}  // namespace spruce
