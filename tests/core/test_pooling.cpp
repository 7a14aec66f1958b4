// max_pool2d, avg_pool2d and global_avg_pool2d: hand-computed forward values
// and gradients, first-maximum tie breaking, padding, and gradient checks.
//
// Code paths: each op is one loop over windows (planes split over threads);
// what differs is the window: max_pool2d with and without padding and with
// overlapping windows (gradients of overlaps add), avg_pool2d with padding
// (padded cells count in the divisor) and without, global_avg_pool2d. Each is
// gradient-checked below.
#include <doctest/doctest.h>

#include <functional>
#include <numeric>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/pooling.h"
#include "core/random.h"

using namespace spruce;

namespace {
void check_values(const Tensor& t, const std::vector<float>& expected) {
  REQUIRE(t.numel() == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i)
    CHECK(t.at(static_cast<int64_t>(i)) == doctest::Approx(expected[i]).epsilon(1e-6));
}

// A 4x4 plane of distinct values:
//    1  5  2  8
//    7  3  6  0
//    9 12 14 10
//   11  4 13 15
const std::vector<float> kPlane = {1, 5, 2, 8, 7, 3, 6, 0, 9, 12, 14, 10, 11, 4, 13, 15};

/// A permutation of 0..n-1 scaled by `spacing`: distinct values spaced well
/// beyond the finite-difference step, so no perturbation crosses a tie.
Tensor distinct(const Shape& shape, float spacing, uint64_t seed) {
  Generator gen(seed);
  std::vector<float> v(static_cast<size_t>(numel_of(shape)));
  std::iota(v.begin(), v.end(), 0.f);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[gen.below(i)]);
  for (float& f : v) f = (f - static_cast<float>(v.size()) / 2) * spacing;
  return Tensor::from_data(shape, v);
}

GradCheckResult check_all(const std::function<Tensor(const Tensor&)>& op, Tensor x) {
  x.set_requires_grad(true);
  GradCheckOptions gc;
  gc.kink_tolerance = 0;  // inputs are chosen away from kinks: skip nothing
  gc.max_samples = x.numel();
  return grad_check([&](const std::vector<Tensor>& in) { return op(in[0]); }, {x}, gc);
}
}  // namespace

TEST_CASE("max_pool2d 2x2 stride 2: values and gradient to each window's maximum") {
  Tensor x = Tensor::from_data({1, 1, 4, 4}, kPlane);
  x.set_requires_grad(true);
  Tensor y = ops::max_pool2d(x, {2, 2, 0});
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  check_values(y, {7, 8, 12, 15});
  y.backward(Tensor::from_data({1, 1, 2, 2}, {1, 2, 3, 4}));
  // Maxima sit at flat indices 4 (7), 3 (8), 9 (12) and 15 (15).
  check_values(x.grad(), {0, 0, 0, 2, 1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 4});
}

TEST_CASE("max_pool2d kernel 3 stride 2 padding 1: padding never wins, overlaps accumulate") {
  // -(plane + 1): all negative, so a padded zero would win if it counted.
  std::vector<float> v(kPlane.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = -(kPlane[i] + 1);
  Tensor x = Tensor::from_data({1, 1, 4, 4}, v);
  x.set_requires_grad(true);
  Tensor y = ops::max_pool2d(x, {3, 2, 1});
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  // Windows (rows x cols): [0,2)x[0,2), [0,2)x[1,4), [1,4)x[0,2), [1,4)x[1,4).
  check_values(y, {-2, -1, -4, -1});
  y.backward(Tensor::from_data({1, 1, 2, 2}, {1, 2, 3, 4}));
  // -1 (flat index 7) is the maximum of two windows and gets both gradients.
  check_values(x.grad(), {1, 0, 0, 0, 0, 3, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(ops::max_pool2d(Tensor::zeros({2, 3, 5, 5}), {3, 2, 1}).shape() == Shape{2, 3, 3, 3});
}

TEST_CASE("max_pool2d sends a tied window's gradient to its first maximum") {
  Tensor x = Tensor::full({1, 1, 2, 2}, 5.f);
  x.set_requires_grad(true);
  Tensor y = ops::max_pool2d(x, {2, 2, 0});
  check_values(y, {5});
  y.backward(Tensor::full({1, 1, 1, 1}, 3.f));
  check_values(x.grad(), {3, 0, 0, 0});
}

TEST_CASE("max_pool2d gradient check on distinct values") {
  Tensor x = distinct({2, 2, 5, 6}, 0.1f, 3);
  auto r = check_all([](const Tensor& t) { return ops::max_pool2d(t, {3, 2, 1}); }, x);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == x.numel());
  r = check_all([](const Tensor& t) { return ops::max_pool2d(t, {2, 2, 0}); }, x);
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("avg_pool2d values with and without padding (padded cells count in the divisor)") {
  Tensor x = Tensor::from_data({1, 1, 4, 4}, kPlane);
  check_values(ops::avg_pool2d(x, {2, 2, 0}), {16.f / 4, 16.f / 4, 36.f / 4, 52.f / 4});
  // Kernel 3, stride 2, padding 1: every window divides by 9.
  Tensor y = ops::avg_pool2d(x, {3, 2, 1});
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  check_values(y, {16.f / 9, 24.f / 9, 46.f / 9, 77.f / 9});

  x.set_requires_grad(true);
  y = ops::avg_pool2d(x, {3, 2, 1});
  y.backward(Tensor::ones(y.shape()));
  // Each pixel gets 1/9 per window that covers it.
  check_values(x.grad(), {1.f / 9, 2.f / 9, 1.f / 9, 1.f / 9,  //
                          2.f / 9, 4.f / 9, 2.f / 9, 2.f / 9,  //
                          1.f / 9, 2.f / 9, 1.f / 9, 1.f / 9,  //
                          1.f / 9, 2.f / 9, 1.f / 9, 1.f / 9});
}

TEST_CASE("avg_pool2d gradient check, with and without padding") {
  Generator gen(5);
  Tensor x = Tensor::randn({2, 3, 5, 6}, gen);
  auto r = check_all([](const Tensor& t) { return ops::avg_pool2d(t, {3, 2, 1}); }, x);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == x.numel());
  r = check_all([](const Tensor& t) { return ops::avg_pool2d(t, {2, 1, 0}); }, x);
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("global_avg_pool2d values, gradient and gradient check") {
  Tensor x = Tensor::from_data({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
  x.set_requires_grad(true);
  Tensor y = ops::global_avg_pool2d(x);
  CHECK(y.shape() == Shape{1, 2});
  check_values(y, {2.5f, 25.f});
  y.backward(Tensor::from_data({1, 2}, {1, 2}));
  check_values(x.grad(), {0.25f, 0.25f, 0.25f, 0.25f, 0.5f, 0.5f, 0.5f, 0.5f});

  Generator gen(6);
  auto r = check_all([](const Tensor& t) { return ops::global_avg_pool2d(t); },
                     Tensor::randn({2, 3, 3, 4}, gen));
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == 72);
}

TEST_CASE("pooling rejects bad shapes and options") {
  Tensor x = Tensor::zeros({1, 1, 4, 4});
  CHECK_THROWS_AS(ops::max_pool2d(Tensor::zeros({4, 4}), {}), UsageError);
  CHECK_THROWS_AS(ops::max_pool2d(x, {0, 1, 0}), UsageError);
  CHECK_THROWS_AS(ops::max_pool2d(x, {2, 0, 0}), UsageError);
  CHECK_THROWS_AS(ops::max_pool2d(x, {2, 2, 2}), UsageError);  // padding > kernel / 2
  CHECK_THROWS_AS(ops::avg_pool2d(x, {5, 1, 0}),
                  UsageError);  // window larger than input
  CHECK_THROWS_AS(ops::global_avg_pool2d(Tensor::zeros({2, 3})), UsageError);
}

TEST_CASE("pooling records no graph when nothing needs a gradient") {
  Tensor x = Tensor::ones({1, 1, 2, 2});
  x.set_requires_grad(true);
  NoGradGuard guard;
  CHECK_FALSE(ops::max_pool2d(x, {}).requires_grad());
  CHECK_FALSE(ops::avg_pool2d(x, {}).requires_grad());
  CHECK_FALSE(ops::global_avg_pool2d(x).requires_grad());
}
