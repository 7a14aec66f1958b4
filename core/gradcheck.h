// Finite-difference gradient check, public so users can check their own ops.
//
// The function's output is projected on a fixed random upstream gradient r
// (loss = sum(out * r), computed in double), never on a plain sum: the sum of
// a softmax, or of a batch-normalised channel, is constant, and a sum-based
// check would pass a wrong backward. For each input that requires a gradient,
// up to `max_samples` elements are perturbed by +-eps (central differences)
// and the numeric derivative is compared to the analytic one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tensor.h"

namespace spruce {

struct GradCheckOptions {
  float eps = 1e-2f;   // step of the central difference
  double atol = 1e-3;  // pass when |num - ana| <= atol + rtol * max(|num|, |ana|)
  double rtol = 1e-2;
  int64_t max_samples = 64;  // elements checked per input (all if fewer)
  uint64_t seed = 1234;      // for r and for the sampled elements
  /// Skip an element when the function is not smooth within eps of it
  /// (e.g. a ReLU kink or a max-pool tie): detected when the two one-sided
  /// differences disagree by more than this fraction (<= 0 disables).
  double kink_tolerance = 0.1;
};

struct GradCheckResult {
  bool ok = true;
  int64_t checked = 0;
  int64_t skipped = 0;  // elements skipped as kinks
  double max_abs_error = 0;
  std::string message;  // first failure: input, element, numeric vs analytic
};

/// `f` maps the inputs to an output tensor; inputs with requires_grad() are checked.
GradCheckResult grad_check(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                           std::vector<Tensor> inputs, const GradCheckOptions& options = {});

}  // namespace spruce
