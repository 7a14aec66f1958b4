// shortcut_pad (ResNet option A): which pixels are kept, where the zero
// channels sit, shapes for odd sizes, gradient routing and a gradient check.
//
// Code paths: one loop over output planes, each a kept plane (subsampled
// input) or a zero padding channel; both are in the gradient check below.
#include <doctest/doctest.h>

#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/shortcut.h"
#include "core/random.h"

using namespace spruce;

namespace {
Tensor iota_tensor(const Shape& shape) {
  std::vector<float> v(static_cast<size_t>(numel_of(shape)));
  std::iota(v.begin(), v.end(), 0.f);
  return Tensor::from_data(shape, v);
}

void check_values(const Tensor& t, const std::vector<float>& expected) {
  REQUIRE(t.numel() == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) CHECK(t.at(static_cast<int64_t>(i)) == expected[i]);
}
}  // namespace

TEST_CASE("shortcut_pad keeps even rows and columns and centres the channels") {
  // x [1, 2, 4, 4] = 0..31: channel 0 holds 0..15, channel 1 holds 16..31.
  Tensor x = iota_tensor({1, 2, 4, 4});
  Tensor y = ops::shortcut_pad(x, 4);
  CHECK(y.shape() == Shape{1, 4, 2, 2});
  check_values(y, {0, 0, 0, 0,      // zero channel
                   0, 2, 8, 10,     // channel 0 at (0,0) (0,2) (2,0) (2,2)
                   16, 18, 24, 26,  // channel 1
                   0, 0, 0, 0});    // zero channel
  // Same channel count: a plain stride-2 subsample.
  check_values(ops::shortcut_pad(x, 2), {0, 2, 8, 10, 16, 18, 24, 26});
}

TEST_CASE("shortcut_pad on odd sizes keeps the last row and column") {
  // [2, 3, 5, 3] -> [2, 5, 3, 2]: rows 0, 2, 4 and columns 0, 2; one zero channel each side.
  Tensor x = iota_tensor({2, 3, 5, 3});
  Tensor y = ops::shortcut_pad(x, 5);
  REQUIRE(y.shape() == Shape{2, 5, 3, 2});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < 2; ++j) {
          const float got = y.at(((n * 5 + c) * 3 + i) * 2 + j);
          if (c == 0 || c == 4)
            CHECK(got == 0.f);
          else
            CHECK(got == x.at(((n * 3 + (c - 1)) * 5 + 2 * i) * 3 + 2 * j));
        }
  CHECK(ops::shortcut_pad(Tensor::zeros({1, 16, 1, 1}), 32).shape() == Shape{1, 32, 1, 1});
}

TEST_CASE("shortcut_pad routes gradients to the kept pixels only") {
  Tensor x = Tensor::zeros({1, 1, 3, 3});
  x.set_requires_grad(true);
  Tensor y = ops::shortcut_pad(x, 3);
  // d_out [1, 3, 2, 2]: channels 0 and 2 are padding and must not reach x.
  y.backward(Tensor::from_data({1, 3, 2, 2}, {100, 100, 100, 100, 1, 2, 3, 4, 100, 100, 100, 100}));
  check_values(x.grad(), {1, 0, 2,  //
                          0, 0, 0,  //
                          3, 0, 4});
}

TEST_CASE("shortcut_pad gradient check") {
  Generator gen(9);
  Tensor x = Tensor::randn({2, 2, 5, 4}, gen);
  x.set_requires_grad(true);
  GradCheckOptions gc;
  gc.kink_tolerance = 0;  // linear
  gc.max_samples = x.numel();
  auto r = grad_check([](const std::vector<Tensor>& in) { return ops::shortcut_pad(in[0], 6); },
                      {x}, gc);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == x.numel());
}

TEST_CASE("shortcut_pad rejects fewer output channels, an odd difference and non-4D input") {
  Tensor x = Tensor::zeros({1, 4, 2, 2});
  CHECK_THROWS_AS(ops::shortcut_pad(x, 2), UsageError);
  CHECK_THROWS_AS(ops::shortcut_pad(x, 7), UsageError);
  CHECK_THROWS_AS(ops::shortcut_pad(Tensor::zeros({4, 2}), 4), UsageError);
}
