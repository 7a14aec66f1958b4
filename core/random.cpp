// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
#include "random.h"

#include <cmath>

namespace spruce {
namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::seed_(uint64_t seed) {
  uint64_t x = seed;
  for (auto& word : state_.s) word = splitmix64(x);
  state_.has_spare = false;
  state_.spare = 0.f;
}

uint64_t Generator::next_u64() {
  auto& s = state_.s;
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

float Generator::uniform() { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }

float Generator::normal() {
  if (state_.has_spare) {
    state_.has_spare = false;
    return state_.spare;
  }
  // Double precision inside so the pair is accurate; 1 - u keeps log away from 0.
  const double u1 = 1.0 - static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * M_PI * u2;
  state_.spare = static_cast<float>(r * std::sin(theta));
  state_.has_spare = true;
  return static_cast<float>(r * std::cos(theta));
}

uint64_t Generator::below(uint64_t n) {
  // Lemire's rejection keeps the result unbiased.
  const uint64_t threshold = (0 - n) % n;
  while (true) {
    const uint64_t r = next_u64();
    const __uint128_t m = static_cast<__uint128_t>(r) * n;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().seed_(seed); }

}  // namespace spruce
