// BatchNorm2d layer: known values in training and eval mode, running
// statistics and the batch counter, PyTorch's state_dict keys, gradients in
// both modes, state round trip, and that its parameters are never prunable.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "layers/batch_norm2d.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
// x [N=2, C=2, H=1, W=2]. Channel 0 holds {1, 2, 3, 6}: mean 3, biased
// variance 3.5, unbiased 14/3. Channel 1 holds {0, 0, 0, 4}: mean 1, biased
// variance 3, unbiased 4.
Tensor example() {
  return Tensor::from_data({2, 2, 1, 2}, {1.f, 2.f, 0.f, 0.f, 3.f, 6.f, 0.f, 4.f});
}
}  // namespace

TEST_CASE("BatchNorm2d training forward uses batch statistics and updates running ones") {
  BatchNorm2d bn(2);
  bn.weight().copy_from(Tensor::from_data({2}, {2.f, 1.f}));
  bn.bias().copy_from(Tensor::from_data({2}, {1.f, -1.f}));
  const Tensor y = bn.forward(example());
  REQUIRE(y.shape() == Shape{2, 2, 1, 2});
  const float s0 = 2.f / std::sqrt(3.5f + 1e-5f), s1 = 1.f / std::sqrt(3.f + 1e-5f);
  const float expected[8] = {(1 - 3) * s0 + 1, (2 - 3) * s0 + 1, (0 - 1) * s1 - 1,
                             (0 - 1) * s1 - 1, (3 - 3) * s0 + 1, (6 - 3) * s0 + 1,
                             (0 - 1) * s1 - 1, (4 - 1) * s1 - 1};
  for (int i = 0; i < 8; ++i) CHECK(y.at(i) == doctest::Approx(expected[i]).epsilon(1e-5));
  // running = 0.9 running + 0.1 batch (unbiased variance).
  CHECK(bn.running_mean().at(0) == doctest::Approx(0.3f));
  CHECK(bn.running_mean().at(1) == doctest::Approx(0.1f));
  CHECK(bn.running_var().at(0) == doctest::Approx(0.9f + 0.1f * 14.f / 3.f));
  CHECK(bn.running_var().at(1) == doctest::Approx(0.9f + 0.1f * 4.f));
  CHECK(bn.num_batches_tracked().item() == 1.f);
  bn.forward(example());
  CHECK(bn.num_batches_tracked().item() == 2.f);
  CHECK(bn.running_mean().at(0) == doctest::Approx(0.9f * 0.3f + 0.3f));
}

TEST_CASE("BatchNorm2d eval forward uses the running statistics and changes nothing") {
  BatchNorm2d bn(2, {.momentum = 0.5f, .eps = 1e-3f});
  bn.forward(example());  // running_mean = {1.5, 0.5}, running_var = {0.5 + 7/3, 0.5 + 2}
  bn.eval();
  const Tensor y = bn.forward(example());
  const float m0 = 1.5f, v0 = 0.5f + 7.f / 3.f, m1 = 0.5f, v1 = 2.5f;
  CHECK(y.at(0) == doctest::Approx((1 - m0) / std::sqrt(v0 + 1e-3f)));
  CHECK(y.at(5) == doctest::Approx((6 - m0) / std::sqrt(v0 + 1e-3f)));
  CHECK(y.at(7) == doctest::Approx((4 - m1) / std::sqrt(v1 + 1e-3f)));
  CHECK(bn.running_mean().at(0) == doctest::Approx(m0));
  CHECK(bn.num_batches_tracked().item() == 1.f);

  // Train and eval differ on the same input.
  bn.train();
  const Tensor t = bn.forward(example());
  CHECK(testing::max_abs_diff(t, y) > 0.1f);
}

TEST_CASE("BatchNorm2d has PyTorch's state_dict keys and is never prunable") {
  BatchNorm2d bn(3);
  std::vector<std::string> keys;
  for (auto& [k, t] : bn.state_dict()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                         "num_batches_tracked"});
  CHECK(bn.num_batches_tracked().shape() == Shape{});
  CHECK(bn.weight().at(2) == 1.f);
  CHECK(bn.bias().at(2) == 0.f);
  CHECK(bn.running_var().at(1) == 1.f);
  CHECK(bn.prunable_parameter_names().empty());
  CHECK_THROWS_AS(bn.set_mask("weight", Tensor::ones({3})), UsageError);

  BatchNorm2d plain(3, {.affine = false});
  CHECK(plain.named_parameters().empty());
  CHECK(plain.state_dict().size() == 3);
  const Tensor y = plain.forward(testing::randn({4, 3, 2, 2}, 1));
  double mean = 0.0;
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t i = 0; i < 4; ++i) mean += y.at(n * 12 + 4 + i);  // channel 1
  CHECK(mean / 16.0 == doctest::Approx(0.0).epsilon(1e-5));
  CHECK_THROWS_AS(BatchNorm2d(0), UsageError);
}

TEST_CASE("BatchNorm2d gradients in training and eval mode") {
  BatchNorm2d bn(3);
  Generator gen(2);
  bn.weight().copy_from(Tensor::rand({3}, gen, 0.5f, 1.5f));
  bn.bias().copy_from(Tensor::rand({3}, gen, -0.5f, 0.5f));
  const Tensor x = testing::randn({4, 3, 3, 3}, 3);
  testing::check_module_gradients(bn, x);
  bn.eval();
  testing::check_module_gradients(bn, x);
}

TEST_CASE("BatchNorm2d state round trip") {
  testing::check_state_round_trip(
      [](uint64_t seed) {
        auto bn = std::make_unique<BatchNorm2d>(3);
        Generator gen(seed);
        bn->weight().copy_from(Tensor::rand({3}, gen, 0.5f, 1.5f));
        bn->bias().copy_from(Tensor::rand({3}, gen, -0.5f, 0.5f));
        return bn;
      },
      testing::randn({4, 3, 2, 2}, 4));
}
