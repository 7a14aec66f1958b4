// Initialisers: fans, Kaiming bounds and standard deviations, determinism.
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.h"
#include "layers/init.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
double mean_square(const Tensor& t) {
  double s = 0.0;
  for (float v : t.span()) s += static_cast<double>(v) * v;
  return s / static_cast<double>(t.numel());
}
}  // namespace

TEST_CASE("fans follow PyTorch") {
  CHECK(init::fan_in(Tensor::zeros({16, 3, 3, 3})) == 27);
  CHECK(init::fan_out(Tensor::zeros({16, 3, 3, 3})) == 144);
  CHECK(init::fan_in(Tensor::zeros({32, 1, 3, 3})) == 9);  // depthwise: in / groups = 1
  CHECK(init::fan_in(Tensor::zeros({10, 64})) == 64);
  CHECK(init::fan_out(Tensor::zeros({10, 64})) == 10);
  CHECK_THROWS_AS(init::fan_in(Tensor::zeros({5})), UsageError);
}

TEST_CASE("kaiming_uniform_ with a = sqrt(5) has bound 1 / sqrt(fan_in)") {
  Generator gen(1);
  Tensor w = Tensor::zeros({64, 16, 3, 3});  // fan_in 144: bound 1/12
  init::kaiming_uniform_(w, gen, std::sqrt(5.0));
  float max_abs = 0.f;
  for (float v : w.span()) max_abs = std::max(max_abs, std::abs(v));
  CHECK(max_abs <= 1.f / 12.f);
  CHECK(max_abs > 0.99f / 12.f);
  CHECK(mean_square(w) == doctest::Approx(1.0 / (144.0 * 3.0)).epsilon(0.05));
  // a = 0 (ReLU gain): bound sqrt(6 / fan_in).
  init::kaiming_uniform_(w, gen, 0.0);
  CHECK(mean_square(w) == doctest::Approx(2.0 / 144.0).epsilon(0.05));
}

TEST_CASE("kaiming_normal_ has std sqrt(2 / fan)") {
  Generator gen(2);
  Tensor w = Tensor::zeros({64, 32, 3, 3});
  init::kaiming_normal_(w, gen, init::FanMode::kFanOut);  // fan_out 576
  CHECK(mean_square(w) == doctest::Approx(2.0 / 576.0).epsilon(0.05));
  init::kaiming_normal_(w, gen);  // fan_in 288
  CHECK(mean_square(w) == doctest::Approx(2.0 / 288.0).epsilon(0.05));
}

TEST_CASE("default_weight_and_bias_ is seeded and draws weight then bias") {
  Generator g1(3), g2(3);
  Tensor w1 = Tensor::zeros({8, 4}), b1 = Tensor::zeros({8});
  Tensor w2 = Tensor::zeros({8, 4}), b2 = Tensor::zeros({8});
  init::default_weight_and_bias_(w1, b1, g1);
  init::default_weight_and_bias_(w2, b2, g2);
  CHECK(testing::max_abs_diff(w1, w2) == 0.f);
  CHECK(testing::max_abs_diff(b1, b2) == 0.f);
  for (float v : b1.span()) CHECK(std::abs(v) <= 0.5f);
  // The weight alone consumes the same draws with or without a bias.
  Generator g3(3);
  Tensor w3 = Tensor::zeros({8, 4});
  init::default_weight_and_bias_(w3, Tensor(), g3);
  CHECK(testing::max_abs_diff(w1, w3) == 0.f);
}
