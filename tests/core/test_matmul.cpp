// matmul and linear: known values and gradient checks.
//
// Code paths, each gradient-checked in "matmul and linear gradients on every
// code path" (and the case before it):
//   sgemm (core/ops/gemm.h)  one OpenBLAS call (small products, or 1 thread),
//                            or split over the threads by column blocks
//                            (n >= m) or by row blocks (m > n), each block
//                            in transposed and plain operand layouts (the
//                            forward and the two backward products differ)
//   linear                   weights of up to 2^16 floats on its own dot
//                            products ("one call", "split by rows": 24 x 100,
//                            lanes and a tail), larger ones on sgemm ("split
//                            by columns": 900 x 100), with a bias (for sgemm
//                            added before the product, beta 1) or without
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/matmul.h"
#include "core/random.h"

using namespace spruce;

TEST_CASE("matmul and linear known values") {
  Tensor a = Tensor::from_data({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::from_data({3, 2}, {1, 0, 0, 1, 1, 1});
  Tensor c = ops::matmul(a, b);
  CHECK(c.shape() == Shape{2, 2});
  CHECK(c.at(0) == 4.f);   // 1 + 3
  CHECK(c.at(1) == 5.f);   // 2 + 3
  CHECK(c.at(2) == 10.f);  // 4 + 6
  CHECK(c.at(3) == 11.f);  // 5 + 6
  // linear: x [1, 3] w [2, 3] b [2]
  Tensor x = Tensor::from_data({1, 3}, {1, 2, 3});
  Tensor w = Tensor::from_data({2, 3}, {1, 1, 1, 0, -1, 2});
  Tensor bias = Tensor::from_data({2}, {0.5f, -1.f});
  Tensor y = ops::linear(x, w, bias);
  CHECK(y.at(0) == 6.5f);
  CHECK(y.at(1) == 3.f);
  CHECK_THROWS_AS(ops::matmul(a, a), UsageError);
  CHECK_THROWS_AS(ops::linear(x, w, Tensor::zeros({3})), UsageError);
}

TEST_CASE("a small linear layer gives a sample the same bits in any batch") {
  Generator g(6);
  const Tensor x = Tensor::randn({13, 100}, g), w = Tensor::randn({10, 100}, g);
  const Tensor bias = Tensor::randn({10}, g);
  const Tensor all = ops::linear(x, w, bias);
  for (int64_t n = 0; n < 13; n += 4) {
    const Tensor one =
        ops::linear(Tensor::from_data({1, 100}, x.span().subspan(100 * n, 100)), w, bias);
    for (int64_t o = 0; o < 10; ++o) CHECK(one.at(o) == all.at(n * 10 + o));
  }
}

TEST_CASE("matmul and linear gradients for every input") {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  Generator g(5);
  Tensor a = Tensor::randn({4, 3}, g).set_requires_grad(true);
  Tensor b = Tensor::randn({3, 5}, g).set_requires_grad(true);
  auto r = grad_check([](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1]); },
                      {a, b}, o);
  INFO(r.message);
  CHECK(r.ok);
  Tensor x = Tensor::randn({4, 3}, g).set_requires_grad(true);
  Tensor w = Tensor::randn({2, 3}, g).set_requires_grad(true);
  Tensor bias = Tensor::randn({2}, g).set_requires_grad(true);
  auto rl =
      grad_check([](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
                 {x, w, bias}, o);
  INFO(rl.message);
  CHECK(rl.ok);
  CHECK(rl.checked == 12 + 6 + 2);
}

TEST_CASE("matmul and linear gradients on every code path") {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  o.max_samples = 32;
  o.eps = 1e-1f;  // a float product of ~100 terms: a larger step keeps rounding small
  o.rtol = 2e-2;
  struct Case {
    const char* what;
    int64_t M, K, N;
  };
  // 2e6 multiply-adds or more are split over the threads (the tests run with 2).
  const Case cases[] = {
      {"one call", 4, 3, 5}, {"split by columns", 24, 100, 900}, {"split by rows", 900, 100, 24}};
  for (const Case& c : cases) {
    CAPTURE(std::string(c.what));
    Generator g(9);
    Tensor a = Tensor::randn({c.M, c.K}, g).set_requires_grad(true);
    Tensor b = Tensor::randn({c.K, c.N}, g).set_requires_grad(true);
    auto r = grad_check([](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1]); },
                        {a, b}, o);
    CHECK_MESSAGE(r.ok, r.message);
    Tensor x = Tensor::randn({c.M, c.K}, g).set_requires_grad(true);
    Tensor w = Tensor::randn({c.N, c.K}, g).set_requires_grad(true);
    Tensor bias = Tensor::randn({c.N}, g).set_requires_grad(true);
    for (const bool with_bias : {true, false}) {
      CAPTURE(with_bias);
      std::vector<Tensor> inputs{x, w};
      if (with_bias) inputs.push_back(bias);
      auto rl = grad_check(
          [](const std::vector<Tensor>& in) {
            return ops::linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor());
          },
          inputs, o);
      CHECK_MESSAGE(rl.ok, rl.message);
    }
  }
}
