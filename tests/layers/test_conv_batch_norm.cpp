// conv_batch_norm: the fused inference path (eval mode, no graph) against
// the plain layer chain, for a conv with a bias (folded into the shift),
// a non-affine batch norm, a residual and a pruned weight; and in training
// mode or with gradients on, exactly the plain chain (values and gradients,
// with the residual and ReLU fused into the batch norm's tail), except that
// a Winograd conv hands the batch norm its output's sums (the chain's values
// and gradients within float rounding).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops/conv2d_winograd.h"
#include "core/ops/elementwise.h"
#include "layers/conv_batch_norm.h"
#include "tests/core/conv_reference.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
/// bn(conv(x)) (+ residual) (ReLU) through the layers one by one.
Tensor chain(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const Tensor& residual, bool relu) {
  Tensor y = bn.forward(conv.forward(x));
  if (residual.defined()) y = ops::add(y, residual);
  return relu ? ops::relu(y) : y;
}

void set_running_stats(BatchNorm2d& bn, Generator& gen) {
  bn.running_mean().copy_from(Tensor::randn({bn.num_features()}, gen, 0.f, 0.3f));
  bn.running_var().copy_from(Tensor::rand({bn.num_features()}, gen, 0.5f, 2.f));
  if (bn.weight().defined())
    bn.weight().copy_from(Tensor::rand({bn.num_features()}, gen, 0.5f, 2.f));
  if (bn.bias().defined()) bn.bias().copy_from(Tensor::randn({bn.num_features()}, gen));
}
}  // namespace

TEST_CASE("conv_batch_norm in eval mode without a graph equals the layer chain") {
  Generator gen(11);
  for (const bool affine : {true, false}) {
    Conv2d conv(6, 10, 3, {.stride = 2, .padding = 1}, Bias::kYes, gen);
    BatchNorm2d bn(10, {.affine = affine});
    set_running_stats(bn, gen);
    Tensor mask = Tensor::ones(conv.weight().shape());
    for (int64_t i = 0; i < mask.numel(); i += 4) mask.data()[i] = 0.f;
    conv.set_mask("weight", mask);  // pruned, not yet zeroed: the forward masks it
    conv.eval();
    bn.eval();
    const Tensor x = testing::randn({3, 6, 9, 9}, 12);
    const Tensor residual = testing::randn({3, 10, 5, 5}, 13);
    for (const bool relu : {false, true})
      for (const Tensor& r : {Tensor(), residual}) {
        INFO("affine " << affine << " relu " << relu << " residual " << r.defined());
        NoGradGuard no_grad;
        const Tensor want = chain(conv, bn, x, r, relu);
        const Tensor got = conv_batch_norm(conv, bn, x, {.residual = r, .relu = relu});
        const float scale = std::max(1.f, testing::max_abs_diff(want, Tensor::zeros(want.shape())));
        CHECK(testing::max_abs_diff(got, want) < 1e-5f * scale);
        CHECK_FALSE(got.requires_grad());
      }
  }
}

TEST_CASE("conv_batch_norm in training mode or with a graph is the layer chain, bit for bit") {
  Generator gen(21), twin_gen(21);
  Conv2d conv(4, 8, 3, {.padding = 1}, Bias::kNo, gen);
  Conv2d twin_conv(4, 8, 3, {.padding = 1}, Bias::kNo, twin_gen);
  BatchNorm2d bn(8), twin_bn(8);
  const Tensor x = testing::randn({2, 4, 6, 6}, 22);
  const Tensor got = conv_batch_norm(conv, bn, x, {.relu = true});  // training, with a graph
  const Tensor want = chain(twin_conv, twin_bn, x, Tensor(), true);
  CHECK(std::equal(got.data(), got.data() + got.numel(), want.data()));
  CHECK(got.requires_grad());
  CHECK(bn.num_batches_tracked().item() == 1.f);
  CHECK(std::equal(bn.running_var().data(), bn.running_var().data() + 8,
                   twin_bn.running_var().data()));
  // Eval mode with a graph (Fisher collection): the plain chain, gradients flow.
  bn.eval();
  twin_bn.eval();
  const Tensor e = conv_batch_norm(conv, bn, x, {.relu = true});
  const Tensor f = chain(twin_conv, twin_bn, x, Tensor(), true);
  CHECK(std::equal(e.data(), e.data() + e.numel(), f.data()));
  ops::sum(e).backward();
  CHECK(conv.weight().grad().defined());
}

TEST_CASE(
    "conv_batch_norm's training tail (+ residual, ReLU) gives the chain's gradients, bit for bit") {
  Generator gen(23), twin_gen(23);
  Conv2d conv(4, 8, 3, {.padding = 1}, Bias::kNo, gen);
  Conv2d twin_conv(4, 8, 3, {.padding = 1}, Bias::kNo, twin_gen);
  BatchNorm2d bn(8), twin_bn(8);
  set_running_stats(bn, gen);  // weight and bias too
  set_running_stats(twin_bn, twin_gen);
  const Tensor x = testing::randn({3, 4, 9, 9}, 24);  // 81-pixel planes
  Tensor r = testing::randn({3, 8, 9, 9}, 25), twin_r = r.clone();
  const Tensor seed = testing::randn({3, 8, 9, 9}, 26);
  r.set_requires_grad(true);
  twin_r.set_requires_grad(true);
  const Tensor got = conv_batch_norm(conv, bn, x, {.residual = r, .relu = true});
  const Tensor want = chain(twin_conv, twin_bn, x, twin_r, true);
  CHECK(std::equal(got.data(), got.data() + got.numel(), want.data()));
  got.backward(seed);
  want.backward(seed);
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.defined() && b.defined() && std::equal(a.data(), a.data() + a.numel(), b.data());
  };
  CHECK(same(conv.weight().grad(), twin_conv.weight().grad()));
  CHECK(same(bn.weight().grad(), twin_bn.weight().grad()));
  CHECK(same(bn.bias().grad(), twin_bn.bias().grad()));
  CHECK(same(r.grad(), twin_r.grad()));
  CHECK(bn.num_batches_tracked().item() == 1.f);
}

TEST_CASE("conv_batch_norm in training on a Winograd conv: the chain within float rounding" *
          doctest::skip(!ops::winograd::supports(test::conv_geometry(4, 16, 16, 8, 8, 3, 3, 1,
                                                                     1)))) {
  // The batch statistics come from the sums the conv takes as it writes its
  // output (core/ops/channel_sums.h), not from a pass of the batch norm's own.
  Generator gen(31), twin_gen(31);
  Conv2d conv(16, 16, 3, {.padding = 1}, Bias::kYes, gen);
  Conv2d twin_conv(16, 16, 3, {.padding = 1}, Bias::kYes, twin_gen);
  BatchNorm2d bn(16), twin_bn(16);
  set_running_stats(bn, gen);
  set_running_stats(twin_bn, twin_gen);
  const Tensor x = testing::randn({4, 16, 8, 8}, 32);
  Tensor r = testing::randn({4, 16, 8, 8}, 33), twin_r = r.clone();
  r.set_requires_grad(true);
  twin_r.set_requires_grad(true);
  const Tensor got = conv_batch_norm(conv, bn, x, {.residual = r, .relu = true});
  const Tensor want = chain(twin_conv, twin_bn, x, twin_r, true);
  CHECK(testing::max_abs_diff(got, want) < 1e-5f);
  CHECK(testing::max_abs_diff(bn.running_mean(), twin_bn.running_mean()) < 1e-6f);
  CHECK(testing::max_abs_diff(bn.running_var(), twin_bn.running_var()) < 1e-5f);
  const Tensor seed = testing::randn({4, 16, 8, 8}, 34);
  got.backward(seed);
  want.backward(seed);
  auto close = [](const Tensor& a, const Tensor& b) {  // relative to b's largest value
    float scale = 0.f;
    for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::abs(b.at(i)));
    return testing::max_abs_diff(a, b) <= 1e-5f * scale;
  };
  CHECK(close(conv.weight().grad(), twin_conv.weight().grad()));
  // (The conv's bias gradient is 0 up to rounding: the batch norm removes the mean.)
  CHECK(close(bn.weight().grad(), twin_bn.weight().grad()));
  CHECK(close(r.grad(), twin_r.grad()));
}
