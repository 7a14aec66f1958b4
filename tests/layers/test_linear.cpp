// Linear: known-value forward, PyTorch-default initialisation, gradients,
// state round trip and a pruned weight staying zero.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "layers/linear.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

TEST_CASE("Linear forward matches a hand computation") {
  Generator gen(1);
  Linear fc(3, 2, Bias::kYes, gen);
  fc.weight().copy_from(Tensor::from_data({2, 3}, {1.f, 2.f, 3.f, 4.f, 5.f, 6.f}));
  fc.bias().copy_from(Tensor::from_data({2}, {0.5f, -1.f}));
  const Tensor y = fc.forward(Tensor::from_data({2, 3}, {1.f, 0.f, -1.f, 2.f, 1.f, 0.f}));
  REQUIRE(y.shape() == Shape{2, 2});
  // [1 - 3 + .5, 4 - 6 - 1; 2 + 2 + .5, 8 + 5 - 1]
  CHECK(y.at(0) == doctest::Approx(-1.5f));
  CHECK(y.at(1) == doctest::Approx(-3.f));
  CHECK(y.at(2) == doctest::Approx(4.5f));
  CHECK(y.at(3) == doctest::Approx(12.f));
}

TEST_CASE("Linear registers weight (prunable) and bias") {
  Linear fc(4, 3);
  const NamedTensors params = fc.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[0].second.shape() == Shape{3, 4});
  CHECK(params[1].first == "bias");
  CHECK(params[1].second.shape() == Shape{3});
  CHECK(fc.prunable_parameter_names() == std::vector<std::string>{"weight"});
  CHECK(fc.named_buffers().empty());
  CHECK(fc.num_parameters() == 15);

  Linear no_bias(4, 3, Bias::kNo);
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK_FALSE(no_bias.bias().defined());
  const Tensor y = no_bias.forward(Tensor::zeros({2, 4}));
  CHECK(y.at(5) == 0.f);
  CHECK_THROWS_AS(Linear(0, 3), UsageError);
}

TEST_CASE("Linear initialisation is PyTorch's default and seeded") {
  Generator g1(7), g2(7), g3(8);
  Linear a(100, 50, Bias::kYes, g1), b(100, 50, Bias::kYes, g2), c(100, 50, Bias::kYes, g3);
  CHECK(testing::max_abs_diff(a.weight(), b.weight()) == 0.f);
  CHECK(testing::max_abs_diff(a.bias(), b.bias()) == 0.f);
  CHECK(testing::max_abs_diff(a.weight(), c.weight()) > 0.f);
  // U(-1/sqrt(100), 1/sqrt(100)): bound 0.1, variance 0.01 / 3.
  const float bound = 0.1f;
  double sq = 0.0;
  float max_weight = 0.f;
  for (float v : a.weight().span()) {
    max_weight = std::max(max_weight, std::abs(v));
    sq += v * v;
  }
  CHECK(max_weight <= bound);
  CHECK(max_weight > 0.099f);
  CHECK(sq / 5000.0 == doctest::Approx(0.01 / 3).epsilon(0.1));
  float max_bias = 0.f;
  for (float v : a.bias().span()) max_bias = std::max(max_bias, std::abs(v));
  CHECK(max_bias <= bound);
  CHECK(max_bias > 0.05f);
}

TEST_CASE("Linear gradients with respect to input, weight and bias") {
  Generator gen(2);
  Linear fc(5, 4, Bias::kYes, gen);
  testing::check_module_gradients(fc, testing::randn({3, 5}, 3));
}

TEST_CASE("Linear state round trip") {
  testing::check_state_round_trip(
      [](uint64_t seed) {
        Generator gen(seed);
        return std::make_unique<Linear>(5, 4, Bias::kYes, gen);
      },
      testing::randn({3, 5}, 4));
}

TEST_CASE("Linear: a pruned weight stays zero") {
  Generator gen(5);
  Linear fc(6, 4, Bias::kYes, gen);
  testing::check_pruned_weight_stays_zero(fc, "weight", testing::randn({3, 6}, 6));
}
