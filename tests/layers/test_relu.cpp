// ReLU layer: known values, gradient away from the kink, no state.
#include <doctest/doctest.h>

#include "layers/relu.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

TEST_CASE("ReLU forward, gradient and empty state") {
  ReLU relu;
  const Tensor y = relu.forward(Tensor::from_data({2, 2}, {-1.f, 0.f, 0.5f, 3.f}));
  CHECK(y.shape() == Shape{2, 2});
  CHECK(y.at(0) == 0.f);
  CHECK(y.at(1) == 0.f);
  CHECK(y.at(2) == 0.5f);
  CHECK(y.at(3) == 3.f);
  testing::check_module_gradients(relu, testing::randn({3, 4}, 1));
  CHECK(relu.state_dict().empty());
  CHECK(relu.prunable_parameter_names().empty());
  testing::check_state_round_trip([](uint64_t) { return std::make_unique<ReLU>(); },
                                  testing::randn({2, 3}, 2));
}
