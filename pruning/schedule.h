// The gradual pruning schedule of Zhu & Gupta (2017), pruning/README.md "Gradual
// schedule": pruning steps from t_0 to t_end every Δt, with the cubic target
//   s_t = s_f + (s_i − s_f) (1 − (t − t_0) / (t_end − t_0))³.
// Time is counted in whatever unit the caller uses (epochs or optimizer
// steps). When the span is not a multiple of Δt, the last step still happens
// at t_end and reaches s_f exactly (the WoodFisher reference misses it); a
// schedule with t_end == t_0 is one-shot pruning to s_f.
#pragma once

#include <cstdint>
#include <vector>

namespace spruce::pruning {

struct GradualSchedule {
  int64_t start = 0;              // t_0
  int64_t end = 0;                // t_end >= t_0
  int64_t frequency = 1;          // Δt >= 1
  double initial_sparsity = 0.0;  // s_i, in [0, 1)
  double final_sparsity = 0.9;    // s_f, in [s_i, 1)

  /// Throws UsageError when the fields are inconsistent.
  void validate() const;
  /// Every time at which a pruning step happens, increasing: t_0, t_0+Δt, ..., and t_end.
  std::vector<int64_t> steps() const;
  /// True when t is one of steps().
  bool is_step(int64_t t) const;
  /// True when some pruning step t lies in [begin, end).
  bool any_step_in(int64_t begin, int64_t end) const;
  /// The target sparsity at time t (s_i before t_0, s_f from t_end on).
  double target(int64_t t) const;
};

}  // namespace spruce::pruning
