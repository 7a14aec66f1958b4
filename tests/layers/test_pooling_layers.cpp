// Pooling layers (MaxPool2d, AvgPool2d, GlobalAvgPool2d): known values,
// shapes with padding, gradients, and their empty state.
#include <doctest/doctest.h>

#include <memory>

#include "core/error.h"
#include "layers/avg_pool2d.h"
#include "layers/global_avg_pool2d.h"
#include "layers/max_pool2d.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
// x [1, 1, 4, 4] = 0 .. 15 with a few values moved so maxima are not all bottom-right.
Tensor grid() {
  return Tensor::from_data({1, 1, 4, 4}, {0.f, 9.f, 2.f, 3.f,    //
                                          4.f, 5.f, 6.f, 1.f,    //
                                          8.f, 1.f, 10.f, 11.f,  //
                                          12.f, 13.f, 14.f, -15.f});
}
}  // namespace

TEST_CASE("MaxPool2d known values") {
  MaxPool2d pool({.kernel = 2, .stride = 2});
  const Tensor y = pool.forward(grid());
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.at(0) == 9.f);
  CHECK(y.at(1) == 6.f);
  CHECK(y.at(2) == 13.f);
  CHECK(y.at(3) == 14.f);
  // kernel 3, stride 2, padding 1 -> 2x2; padded cells never win.
  MaxPool2d padded({.kernel = 3, .stride = 2, .padding = 1});
  const Tensor neg = Tensor::full({1, 1, 4, 4}, -1.f);
  const Tensor z = padded.forward(neg);
  REQUIRE(z.shape() == Shape{1, 1, 2, 2});
  CHECK(z.at(0) == -1.f);
  CHECK(padded.forward(grid()).at(3) == 14.f);  // rows 1..3, cols 1..3
  CHECK_THROWS_AS(MaxPool2d({.kernel = 0}), UsageError);
}

TEST_CASE("AvgPool2d known values") {
  AvgPool2d pool({.kernel = 2, .stride = 2});
  const Tensor y = pool.forward(grid());
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.at(0) == doctest::Approx((0 + 9 + 4 + 5) / 4.f));
  CHECK(y.at(1) == doctest::Approx((2 + 3 + 6 + 1) / 4.f));
  CHECK(y.at(2) == doctest::Approx((8 + 1 + 12 + 13) / 4.f));
  CHECK(y.at(3) == doctest::Approx((10 + 11 + 14 - 15) / 4.f));
  // Padding counts as zeros in the divisor: the corner window holds 4 real cells of 9.
  AvgPool2d padded({.kernel = 3, .stride = 2, .padding = 1});
  const Tensor z = padded.forward(Tensor::ones({1, 1, 4, 4}));
  REQUIRE(z.shape() == Shape{1, 1, 2, 2});
  CHECK(z.at(0) == doctest::Approx(4.f / 9.f));
  CHECK(z.at(3) == doctest::Approx(1.f));
}

TEST_CASE("GlobalAvgPool2d averages each channel") {
  GlobalAvgPool2d pool;
  const Tensor x = testing::randn({2, 3, 2, 3}, 1);
  const Tensor y = pool.forward(x);
  REQUIRE(y.shape() == Shape{2, 3});
  for (int64_t nc = 0; nc < 6; ++nc) {
    double s = 0.0;
    for (int64_t i = 0; i < 6; ++i) s += x.at(nc * 6 + i);
    CHECK(y.at(nc) == doctest::Approx(s / 6.0).epsilon(1e-5));
  }
  const Tensor g = pool.forward(grid());
  CHECK(g.shape() == Shape{1, 1});
  CHECK(g.at(0) == doctest::Approx(84.f / 16.f));
}

TEST_CASE("pooling gradients") {
  const Tensor x = testing::randn({2, 3, 5, 5}, 2);  // random values: no max-pool ties
  MaxPool2d max_pool({.kernel = 3, .stride = 2, .padding = 1});
  testing::check_module_gradients(max_pool, x);
  AvgPool2d avg_pool({.kernel = 2, .stride = 2});
  testing::check_module_gradients(avg_pool, testing::randn({2, 3, 4, 6}, 3));
  GlobalAvgPool2d global;
  testing::check_module_gradients(global, x);
}

TEST_CASE("pooling layers have no state and nothing to prune") {
  MaxPool2d max_pool;
  AvgPool2d avg_pool;
  GlobalAvgPool2d global;
  for (Module* m : {static_cast<Module*>(&max_pool), static_cast<Module*>(&avg_pool),
                    static_cast<Module*>(&global)}) {
    CHECK(m->state_dict().empty());
    CHECK(m->prunable_parameter_names().empty());
    m->load_state_dict({});
    CHECK_THROWS_AS(m->load_state_dict({{"weight", Tensor::ones({1})}}), FormatError);
  }
  testing::check_state_round_trip([](uint64_t) { return std::make_unique<MaxPool2d>(); },
                                  testing::randn({1, 2, 4, 4}, 4));
}
