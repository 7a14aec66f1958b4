// Elementwise ops: known values and gradient checks.
//
// Code paths, each gradient-checked in "elementwise gradient checks on every
// code path" (and the cases before it):
//   d input    written into a fresh gradient, or added to one another
//              consumer already wrote (add, sub, mul, scale, relu, mul_mask)
//   size       one parallel chunk, or several (over 2^15 elements)
//   relu       on its own, or fused with a batch norm before it (that node's
//              backward: tests/core/test_batch_norm.cpp)
//   sum, mean  serial reductions (one path)
#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/elementwise.h"
#include "core/ops/shape.h"
#include "core/random.h"

using namespace spruce;

namespace {
GradCheckOptions smooth() {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  return o;
}
}  // namespace

TEST_CASE("known values") {
  Tensor a = Tensor::from_data({3}, {1, -2, 3});
  Tensor b = Tensor::from_data({3}, {4, 5, -6});
  CHECK(ops::add(a, b).at(1) == 3.f);
  CHECK(ops::sub(a, b).at(2) == 9.f);
  CHECK(ops::mul(a, b).at(0) == 4.f);
  CHECK(ops::scale(a, -2.f).at(1) == 4.f);
  CHECK(ops::relu(a).at(1) == 0.f);
  CHECK(ops::relu(a).at(2) == 3.f);
  CHECK(ops::sum(a).item() == 2.f);
  CHECK(ops::mean(a).item() == doctest::Approx(2.f / 3.f));
  CHECK_THROWS_AS(ops::add(a, Tensor::zeros({2})), UsageError);
}

TEST_CASE("gradients of add, sub, mul, scale, sum, mean, reshape") {
  Generator g(3);
  Tensor a = Tensor::randn({2, 3}, g).set_requires_grad(true);
  Tensor b = Tensor::randn({2, 3}, g).set_requires_grad(true);
  auto check = [&](auto f) {
    auto r = grad_check(f, {a, b}, smooth());
    INFO(r.message);
    CHECK(r.ok);
  };
  check([](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); });
  check([](const std::vector<Tensor>& in) { return ops::sub(in[0], in[1]); });
  check([](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); });
  check([](const std::vector<Tensor>& in) { return ops::scale(ops::mul(in[0], in[0]), -1.5f); });
  check([](const std::vector<Tensor>& in) { return ops::sum(ops::mul(in[0], in[1])); });
  check([](const std::vector<Tensor>& in) { return ops::mean(ops::mul(in[0], in[1])); });
  check([](const std::vector<Tensor>& in) {
    return ops::mul(ops::reshape(in[0], {3, 2}), ops::flatten(ops::reshape(in[1], {3, 1, 2})));
  });
}

TEST_CASE("relu gradient away from the kink, and the checker skips the kink") {
  Tensor x = Tensor::from_data({5}, {-2.f, -0.5f, 0.3f, 1.f, 2.f}).set_requires_grad(true);
  auto r = grad_check([](const std::vector<Tensor>& in) { return ops::relu(in[0]); }, {x});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.checked == 5);
  Tensor k = Tensor::from_data({2}, {0.f, 1.f}).set_requires_grad(true);
  auto rk = grad_check([](const std::vector<Tensor>& in) { return ops::relu(in[0]); }, {k});
  CHECK(rk.skipped == 1);
  CHECK(rk.ok);
}

TEST_CASE("mul_mask zeroes masked values and their gradients") {
  Tensor w = Tensor::from_data({4}, {1, 2, 3, 4}).set_requires_grad(true);
  Tensor m = Tensor::from_data({4}, {1, 0, 1, 0});
  Tensor y = ops::mul_mask(w, m);
  CHECK(y.at(1) == 0.f);
  CHECK(y.at(2) == 3.f);
  ops::sum(ops::mul(y, y)).backward();
  CHECK(w.grad().at(0) == doctest::Approx(2.f));
  CHECK(w.grad().at(1) == 0.f);
  CHECK(w.grad().at(3) == 0.f);
  auto r = grad_check([m](const std::vector<Tensor>& in) { return ops::mul_mask(in[0], m); },
                      {Tensor::from_data({4}, {1, 2, 3, 4}).set_requires_grad(true)}, smooth());
  CHECK(r.ok);
}

TEST_CASE("elementwise gradient checks on every code path") {
  using Op = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, Op> ops_[] = {
      {"add", [](const Tensor& a, const Tensor& b) { return ops::add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return ops::sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return ops::mul(a, b); }},
      {"scale", [](const Tensor& a, const Tensor&) { return ops::scale(a, -1.5f); }},
      {"relu", [](const Tensor& a, const Tensor&) { return ops::relu(a); }},
      {"mul_mask", [](const Tensor& a, const Tensor& b) { return ops::mul_mask(a, ops::relu(b)); }},
  };
  for (const int64_t n : {int64_t{6}, int64_t{70001}}) {  // one chunk, three chunks
    for (const auto& [name, op] : ops_) {
      for (const bool added : {false, true}) {
        CAPTURE(n);
        CAPTURE(std::string(name));
        CAPTURE(added);
        Generator g(7);
        Tensor a = Tensor::randn({n}, g);
        // Away from relu's kink: |a| >= 0.1.
        for (float& v : a.span()) v = v < 0 ? v - 0.1f : v + 0.1f;
        a.set_requires_grad(true);
        Tensor b = Tensor::randn({n}, g).set_requires_grad(std::string(name) != "mul_mask");
        GradCheckOptions o = smooth();
        o.max_samples = 64;
        auto r = grad_check(
            [op, added](const std::vector<Tensor>& in) {
              const Tensor y = op(in[0], in[1]);
              // a's second consumer writes its gradient first, so op's adds to it.
              return added ? ops::add(y, ops::scale(in[0], 0.5f)) : y;
            },
            {a, b}, o);
        CHECK_MESSAGE(r.ok, r.message);
        CHECK(r.checked > 0);
      }
    }
  }
}
