// The graph walk: accumulation, reuse of a tensor, no-grad mode, freeing.
#include <doctest/doctest.h>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/elementwise.h"
#include "core/ops/matmul.h"

using namespace spruce;

TEST_CASE("a reused tensor accumulates gradients from every use") {
  Tensor x = Tensor::from_data({2}, {3.f, -1.f}).set_requires_grad(true);
  // y = sum(x * x + x) -> dy/dx = 2x + 1
  Tensor y = ops::sum(ops::add(ops::mul(x, x), x));
  y.backward();
  CHECK(x.grad().at(0) == doctest::Approx(7.f));
  CHECK(x.grad().at(1) == doctest::Approx(-1.f));
  // A second backward on a new graph adds to the existing gradient.
  ops::sum(x).backward();
  CHECK(x.grad().at(0) == doctest::Approx(8.f));
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("diamond graph: each node runs once, after all its consumers") {
  Tensor x = Tensor::from_data({1}, {2.f}).set_requires_grad(true);
  Tensor a = ops::scale(x, 3.f);  // 3x
  Tensor b = ops::mul(a, a);      // 9x^2
  Tensor c = ops::add(b, a);      // 9x^2 + 3x
  ops::sum(c).backward();         // d/dx = 18x + 3 = 39
  CHECK(x.grad().item() == doctest::Approx(39.f));
}

TEST_CASE("no-grad mode records nothing, and only needed gradients are computed") {
  Tensor w = Tensor::from_data({2, 2}, {1, 2, 3, 4}).set_requires_grad(true);
  Tensor x = Tensor::from_data({1, 2}, {1, 1});
  {
    NoGradGuard guard;
    Tensor y = ops::linear(x, w);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
  }
  Tensor y = ops::sum(ops::linear(x, w));
  CHECK(y.requires_grad());
  y.backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());  // x never asked for a gradient
}

TEST_CASE("backward frees the graph and intermediate gradients") {
  Tensor x = Tensor::from_data({3}, {1, 2, 3}).set_requires_grad(true);
  Tensor h = ops::relu(x);
  Tensor y = ops::sum(h);
  CHECK(h.grad_fn() != nullptr);
  y.backward();
  CHECK(h.grad_fn() == nullptr);
  CHECK(y.grad_fn() == nullptr);
  CHECK_FALSE(h.grad().defined());
  CHECK(x.grad().defined());
}

TEST_CASE("backward needs a seed for non-scalars and a graph") {
  Tensor x = Tensor::from_data({2}, {1, 2}).set_requires_grad(true);
  Tensor y = ops::scale(x, 2.f);
  CHECK_THROWS_AS(y.backward(), UsageError);
  y.backward(Tensor::from_data({2}, {1.f, 10.f}));
  CHECK(x.grad().at(1) == doctest::Approx(20.f));
  Tensor c = Tensor::ones({1});
  CHECK_THROWS_AS(c.backward(), UsageError);
}
