// Same seed and thread count -> bit-identical training; another seed -> different.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "core/ops/elementwise.h"
#include "core/ops/loss.h"
#include "core/ops/matmul.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace spruce;

namespace {
/// A few plain SGD steps of a 2-layer MLP on seeded random data; returns the final weights.
std::vector<float> run(uint64_t seed) {
  Generator g(seed);
  Tensor w1 = Tensor::randn({32, 20}, g, 0.f, 0.3f).set_requires_grad(true);
  Tensor w2 = Tensor::randn({5, 32}, g, 0.f, 0.3f).set_requires_grad(true);
  Tensor x = Tensor::randn({64, 20}, g);
  std::vector<int32_t> y(64);
  for (auto& v : y) v = static_cast<int32_t>(g.below(5));
  for (int step = 0; step < 5; ++step) {
    Tensor loss = ops::cross_entropy(ops::linear(ops::relu(ops::linear(x, w1)), w2), y);
    w1.zero_grad();
    w2.zero_grad();
    loss.backward();
    for (Tensor* w : {&w1, &w2})
      for (int64_t i = 0; i < w->numel(); ++i) w->data()[i] -= 0.1f * w->grad().data()[i];
  }
  std::vector<float> out(w1.span().begin(), w1.span().end());
  out.insert(out.end(), w2.span().begin(), w2.span().end());
  return out;
}
}  // namespace

TEST_CASE("same seed gives the same bits, another seed does not") {
  set_num_threads(2);
  const auto a = run(11), b = run(11), c = run(12);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) != 0);
}
