// Cross-entropy: hand-computed values, stability and gradient check.
//
// Code paths: one (a fused, max-shifted log-softmax per row, its backward
// softmax - one_hot over N); gradient-checked below.
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/loss.h"
#include "core/random.h"

using namespace spruce;

TEST_CASE("cross-entropy known values") {
  // Row 0: logits (0, 0) label 0 -> log 2. Row 1: (1, 2, 3) padded... use C = 2:
  // row 1 logits (2, 0) label 1 -> -log(e^0 / (e^2 + 1)) = log(1 + e^2).
  Tensor z = Tensor::from_data({2, 2}, {0, 0, 2, 0});
  std::vector<int32_t> y{0, 1};
  const double expected = (std::log(2.0) + std::log(1.0 + std::exp(2.0))) / 2.0;
  CHECK(ops::cross_entropy(z, y).item() == doctest::Approx(expected).epsilon(1e-6));
  CHECK(ops::count_correct(z, y) ==
        1);  // row 0 ties -> class 0 (correct); row 1 -> class 0 (wrong)
}

TEST_CASE("cross-entropy is stable for huge logits") {
  Tensor z = Tensor::from_data({1, 3}, {1000.f, 0.f, -1000.f});
  std::vector<int32_t> y{1};
  const float loss = ops::cross_entropy(z, y).item();
  CHECK(std::isfinite(loss));
  CHECK(loss == doctest::Approx(1000.f));
}

TEST_CASE("cross-entropy gradient and label validation") {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  Generator g(9);
  std::vector<int32_t> y{0, 2, 1, 2};
  Tensor z = Tensor::randn({4, 3}, g).set_requires_grad(true);
  auto r = grad_check([&](const std::vector<Tensor>& in) { return ops::cross_entropy(in[0], y); },
                      {z}, o);
  INFO(r.message);
  CHECK(r.ok);
  std::vector<int32_t> bad{0, 3, 1, 2};
  CHECK_THROWS_AS(ops::cross_entropy(z, bad), UsageError);
}
