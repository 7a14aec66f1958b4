// Flatten layer: shape, values, gradient, no state.
#include <doctest/doctest.h>

#include "layers/flatten.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

TEST_CASE("Flatten keeps the batch dimension and the data") {
  Flatten flatten;
  const Tensor x = testing::randn({2, 3, 2, 2}, 1);
  const Tensor y = flatten.forward(x);
  REQUIRE(y.shape() == Shape{2, 12});
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(y.at(i) == x.at(i));
  testing::check_module_gradients(flatten, x);
  CHECK(flatten.state_dict().empty());
  testing::check_state_round_trip([](uint64_t) { return std::make_unique<Flatten>(); }, x);
}
