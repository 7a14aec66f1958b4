// batch_norm: hand-computed forward values, running statistics, eval mode,
// gradient checks through the batch statistics, precision and determinism.
//
// Code paths of batch_norm's forward and backward, each gradient-checked in
// "batch_norm gradient checks on every code path" (and the cases before it):
//   plane size S = H*W     short (< 64: per-position sums over a row of
//                          channels) or long (>= 64: one channel plane at a
//                          time, 8 double lanes, then scalars (9x9, 11x11) or
//                          none (8x8, 12x12, 28x28))
//   mode                   training (batch statistics) or eval (running)
//   batch statistics       from a pass over x, or from a conv's sums of x
//                          (BatchNormOptions::sums): tests/core/test_channel_sums.cpp
//   fused ReLU             relu(batch_norm(x)) records one node whose backward
//                          masks by the output (relu_of_batch_norm) or not
//   tail                   batch_norm(x, ..., {.residual, .relu}): ReLU only,
//                          residual + ReLU, residual only, or a residual node
//                          whose ReLU came after (relu_of_batch_norm); checked
//                          in "batch_norm tails: gradient checks on every code path"
//   ReLU mask              recomputed from x (no residual, long planes) or read
//                          from the output (residual, or short planes)
//   d residual             assigned into a fresh gradient in the sums pass (d x
//                          then reads g' back from it), added to an existing
//                          one, or written by a pass of its own (eval mode
//                          without d weight and d bias)
//   d x                    written into a fresh gradient or added to one that
//                          another consumer of x already wrote
//   weight, bias           present or absent ([N, C] input without weight)
// Tails are also bit for bit the plain composition (ops::add, ops::relu), and
// forward and backward are bit-identical for 1 and 2 threads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/batch_norm.h"
#include "core/ops/elementwise.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace spruce;

namespace {
void check_values(const Tensor& t, const std::vector<float>& expected, double tol = 1e-5) {
  REQUIRE(t.numel() == static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    const float v = t.at(static_cast<int64_t>(i));
    if (tol == 0)
      CHECK(v == expected[i]);
    else
      CHECK(v == doctest::Approx(expected[i]).epsilon(tol));
  }
}
}  // namespace

TEST_CASE("batch_norm training forward, running statistics and eval on hand-computed values") {
  // x [N=2, C=1, H=2, W=1] = {1, 3 | 5, 7}: mean 4, biased variance
  // (9 + 1 + 1 + 9) / 4 = 5, unbiased variance 20 / 3.
  Tensor x = Tensor::from_data({2, 1, 2, 1}, {1, 3, 5, 7});
  Tensor gamma = Tensor::from_data({1}, {2});
  Tensor beta = Tensor::from_data({1}, {0.5f});
  Tensor rm = Tensor::zeros({1});
  Tensor rv = Tensor::ones({1});
  ops::BatchNormOptions opt;  // momentum 0.1, eps 1e-5

  // y = 2 (x - 4) / sqrt(5 + 1e-5) + 0.5
  Tensor y = ops::batch_norm(x, gamma, beta, rm, rv, opt);
  CHECK(y.shape() == Shape{2, 1, 2, 1});
  check_values(y, {-2.18327889f, -0.39442630f, 1.39442630f, 3.18327889f});

  // running_mean = 0.9 * 0 + 0.1 * 4; running_var = 0.9 * 1 + 0.1 * 20/3 (unbiased).
  CHECK(rm.item() == doctest::Approx(0.4f).epsilon(1e-6));
  CHECK(rv.item() == doctest::Approx(0.9 + 0.1 * 20.0 / 3.0).epsilon(1e-6));

  // Eval: y = 2 (x - 0.4) / sqrt(1.5666667 + 1e-5) + 0.5; running stats stay as they are.
  opt.training = false;
  Tensor y_eval = ops::batch_norm(x, gamma, beta, rm, rv, opt);
  check_values(y_eval, {1.45871949f, 4.65445114f, 7.85018279f, 11.04591444f});
  CHECK(rm.item() == doctest::Approx(0.4f).epsilon(1e-6));
  CHECK(rv.item() == doctest::Approx(1.5666667f).epsilon(1e-6));
}

TEST_CASE("batch_norm on [N, C] keeps channels apart; weight and bias may be absent") {
  // Channel 0 = {1, 2, 3}: mean 2, biased variance 2/3.
  // Channel 1 = {10, 20, 60}: mean 30, biased variance (400 + 100 + 900) / 3.
  Tensor x = Tensor::from_data({3, 2}, {1, 10, 2, 20, 3, 60});
  Tensor rm = Tensor::from_data({2}, {1, 2});
  Tensor rv = Tensor::from_data({2}, {3, 4});
  ops::BatchNormOptions opt;
  opt.momentum = 0.5f;
  Tensor y = ops::batch_norm(x, Tensor(), Tensor(), rm, rv, opt);
  const float s0 = 1.f / std::sqrt(2.f / 3.f + 1e-5f), s1 = 1.f / std::sqrt(1400.f / 3.f + 1e-5f);
  check_values(y, {-s0, -20 * s1, 0, -10 * s1, s0, 30 * s1});
  // Momentum 0.5: halfway between the old value and the batch value (unbiased: 1 and 700).
  check_values(rm, {1.5f, 16.f});
  check_values(rv, {2.f, 352.f});
}

TEST_CASE("batch_norm statistics stay accurate when the mean dwarfs the spread") {
  // Short planes (5x5) and long ones (9x9: vector sums and a scalar tail;
  // 28x28: vector sums only), a mean of 1e4 or 100 over a spread of 1.
  struct Case {
    int64_t H;
    float mean;
  };
  for (const Case k : {Case{5, 1e4f}, Case{9, 1e4f}, Case{9, 100.f}, Case{28, 100.f}}) {
    CAPTURE(k.H);
    CAPTURE(k.mean);
    Generator gen(7);
    const int64_t S = k.H * k.H, M = 4 * S;
    Tensor x = Tensor::randn({4, 3, k.H, k.H}, gen, k.mean, 1.f);
    Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
    ops::BatchNormOptions opt;
    opt.momentum = 1.f;  // running stats become the batch stats
    Tensor y = ops::batch_norm(x, Tensor(), Tensor(), rm, rv, opt);
    for (int64_t c = 0; c < 3; ++c) {
      // Double-precision two-pass reference on the same float values.
      double m = 0, v = 0, ym = 0, yv = 0;
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t s = 0; s < S; ++s) m += x.at((n * 3 + c) * S + s);
      m /= M;
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t s = 0; s < S; ++s) {
          const double d = x.at((n * 3 + c) * S + s) - m;
          v += d * d;
          ym += y.at((n * 3 + c) * S + s);
        }
      v /= M;
      ym /= M;
      for (int64_t n = 0; n < 4; ++n)
        for (int64_t s = 0; s < S; ++s) {
          const double d = y.at((n * 3 + c) * S + s) - ym;
          yv += d * d;
        }
      yv /= M;
      CHECK(rm.at(c) == doctest::Approx(m).epsilon(1e-7));
      CHECK(rv.at(c) == doctest::Approx(v * M / (M - 1)).epsilon(1e-4));
      CHECK(std::abs(ym) < 1e-3);
      CHECK(yv == doctest::Approx(v / (v + 1e-5)).epsilon(1e-3));
    }
  }
}

TEST_CASE("batch_norm training-mode gradients to x, weight and bias") {
  Generator gen(11);
  Tensor x = Tensor::randn({3, 2, 2, 3}, gen);
  Tensor w = Tensor::randn({2}, gen, 1.f, 0.3f);
  Tensor b = Tensor::randn({2}, gen);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  GradCheckOptions gc;
  gc.kink_tolerance = 0;  // smooth everywhere
  auto r = grad_check(
      [&](const std::vector<Tensor>& in) {
        return ops::batch_norm(in[0], in[1], in[2], rm, rv, ops::BatchNormOptions{});
      },
      {x, w, b}, gc);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == 36 + 2 + 2);
}

TEST_CASE("batch_norm training-mode gradient of x on [N, C] without weight") {
  Generator gen(12);
  Tensor x = Tensor::randn({5, 3}, gen);
  x.set_requires_grad(true);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  GradCheckOptions gc;
  gc.kink_tolerance = 0;
  auto r = grad_check(
      [&](const std::vector<Tensor>& in) {
        return ops::batch_norm(in[0], Tensor(), Tensor(), rm, rv, ops::BatchNormOptions{});
      },
      {x}, gc);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == 15);
}

TEST_CASE("batch_norm eval-mode gradients, and eval leaves running statistics alone") {
  Generator gen(13);
  Tensor x = Tensor::randn({2, 3, 2, 2}, gen);
  Tensor w = Tensor::randn({3}, gen);
  Tensor b = Tensor::randn({3}, gen);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor rm = Tensor::from_data({3}, {0.3f, -0.2f, 1.f});
  Tensor rv = Tensor::from_data({3}, {0.5f, 2.f, 1.5f});
  ops::BatchNormOptions opt;
  opt.training = false;
  GradCheckOptions gc;
  gc.kink_tolerance = 0;
  auto r = grad_check(
      [&](const std::vector<Tensor>& in) {
        return ops::batch_norm(in[0], in[1], in[2], rm, rv, opt);
      },
      {x, w, b}, gc);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == 24 + 3 + 3);
  check_values(rm, {0.3f, -0.2f, 1.f}, 0);
  check_values(rv, {0.5f, 2.f, 1.5f}, 0);

  // Eval d x is the affine factor gamma / sqrt(running_var + eps) per channel.
  x.zero_grad();
  Tensor y = ops::batch_norm(x, w, b, rm, rv, opt);
  y.backward(Tensor::ones(y.shape()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 4) % 3;
    CHECK(x.grad().at(i) == doctest::Approx(w.at(c) / std::sqrt(rv.at(c) + 1e-5f)).epsilon(1e-6));
  }
}

TEST_CASE("batch_norm gradient checks on every code path") {
  struct Path {
    const char* what;
    int64_t H, W;  // plane size H * W: < 64 short, >= 64 long (81 also leaves a vector tail)
    bool training, relu, accumulate;
  };
  const Path paths[] = {
      {"short plane, training", 2, 3, true, false, false},
      {"long plane, training", 9, 9, true, false, false},
      {"long plane, exactly 64", 8, 8, true, false, false},
      {"short plane, eval", 2, 3, false, false, false},
      {"long plane, eval", 9, 9, false, false, false},
      {"short plane, training, fused relu", 2, 3, true, true, false},
      {"long plane, training, fused relu", 9, 9, true, true, false},
      {"long plane, eval, fused relu", 9, 9, false, true, false},
      {"short plane, training, d x added", 2, 3, true, false, true},
      {"long plane, training, d x added", 9, 9, true, false, true},
      {"long plane, training, fused relu, d x added", 9, 9, true, true, true},
  };
  for (const Path& p : paths) {
    CAPTURE(std::string(p.what));
    Generator gen(31);
    Tensor x = Tensor::randn({2, 3, p.H, p.W}, gen);
    Tensor w = Tensor::randn({3}, gen, 1.f, 0.3f);
    Tensor b = Tensor::randn({3}, gen, 0.f, 0.5f);
    if (p.relu) {
      // Keep every output away from the ReLU's kink, so that a step of w or b
      // (which moves a whole channel) crosses none: |x| in [0.5, 1.5), a
      // batch (or running) mean within +-0.3 and no bias put |x - mean| >= 0.2.
      float* px = x.data();
      for (int64_t i = 0; i < x.numel(); ++i)
        px[i] = (px[i] < 0 ? -1.f : 1.f) * (0.5f + std::fmod(std::abs(px[i]), 1.f));
      b.fill_(0.f);
    }
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);
    Tensor rm = Tensor::from_data({3}, {0.1f, -0.2f, 0.3f});
    Tensor rv = Tensor::from_data({3}, {0.8f, 1.2f, 1.5f});
    ops::BatchNormOptions opt;
    opt.training = p.training;
    GradCheckOptions gc;
    gc.max_samples = 96;
    gc.kink_tolerance = 0;  // smooth: no output is near the ReLU's kink (above)
    auto r = grad_check(
        [&](const std::vector<Tensor>& in) {
          Tensor y = ops::batch_norm(in[0], in[1], in[2], rm, rv, opt);
          if (p.relu) y = ops::relu(y);
          return p.accumulate ? ops::add(y, in[0]) : y;
        },
        {x, w, b}, gc);
    CHECK_MESSAGE(r.ok, r.message);
    CHECK(r.checked + r.skipped == std::min<int64_t>(96, x.numel()) + 3 + 3);
  }
}

namespace {
/// x of shape [2, 3, H, W] with |x| in [0.5, 1.5) and a residual of |r| < 0.05:
/// with no bias, every output of bn(x) + r stays at least ~0.1 from the
/// ReLU's kink, also after a step of the gradient check (see the relu paths
/// of the test above).
void away_from_kink(Tensor& x, Tensor& r) {
  float* px = x.data();
  for (int64_t i = 0; i < x.numel(); ++i)
    px[i] = (px[i] < 0 ? -1.f : 1.f) * (0.5f + std::fmod(std::abs(px[i]), 1.f));
  float* pr = r.data();
  for (int64_t i = 0; i < r.numel(); ++i) pr[i] = 0.05f * std::tanh(pr[i]);
}

bool bits_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.at(i) != b.at(i)) return false;
  return true;
}
}  // namespace

TEST_CASE("batch_norm tails: gradient checks on every code path") {
  enum class Tail { kRelu, kResidualRelu, kResidual, kResidualThenRelu };
  struct Path {
    const char* what;
    int64_t H, W;  // < 64 short plane, >= 64 long
    bool training;
    Tail tail;
    bool r_added;  // the residual is also returned: its gradient exists when the tail adds to it
    bool x_added;  // x is also returned: d x is added
    bool frozen;   // weight and bias need no gradient (eval: no sums pass)
  };
  const Path paths[] = {
      {"short, training, relu (mask from z)", 2, 3, true, Tail::kRelu, false, false, false},
      {"long, training, relu (mask from x)", 9, 9, true, Tail::kRelu, false, false, false},
      {"long, exactly 64, training, relu", 8, 8, true, Tail::kRelu, false, false, false},
      {"long, eval, relu, 11x11", 11, 11, false, Tail::kRelu, false, false, false},
      {"long, training, relu, d x added", 9, 9, true, Tail::kRelu, false, true, false},
      {"short, training, residual + relu", 2, 3, true, Tail::kResidualRelu, false, false, false},
      {"long, training, residual + relu, 11x11", 11, 11, true, Tail::kResidualRelu, false, false,
       false},
      {"long, training, residual", 9, 9, true, Tail::kResidual, false, false, false},
      {"short, training, residual", 2, 3, true, Tail::kResidual, false, false, false},
      {"long, training, residual, then ops::relu", 9, 9, true, Tail::kResidualThenRelu, false,
       false, false},
      {"long, training, residual + relu, d residual added", 9, 9, true, Tail::kResidualRelu, true,
       false, false},
      {"short, training, residual + relu, d residual added", 2, 3, true, Tail::kResidualRelu, true,
       false, false},
      {"long, training, residual + relu, d x and d residual added", 9, 9, true, Tail::kResidualRelu,
       true, true, false},
      {"long, eval, residual + relu", 9, 9, false, Tail::kResidualRelu, false, false, false},
      {"long, eval, residual + relu, frozen affine", 9, 9, false, Tail::kResidualRelu, false, false,
       true},
      {"short, eval, residual + relu, frozen affine, d residual added", 2, 3, false,
       Tail::kResidualRelu, true, false, true},
  };
  for (const Path& p : paths) {
    CAPTURE(std::string(p.what));
    Generator gen(41);
    Tensor x = Tensor::randn({2, 3, p.H, p.W}, gen);
    Tensor w = Tensor::randn({3}, gen, 1.f, 0.3f);
    Tensor b = Tensor::zeros({3});
    Tensor res = Tensor::randn(x.shape(), gen);
    away_from_kink(x, res);
    x.set_requires_grad(true);
    res.set_requires_grad(true);
    w.set_requires_grad(!p.frozen);
    b.set_requires_grad(!p.frozen);
    Tensor rm = Tensor::from_data({3}, {0.1f, -0.2f, 0.3f});
    Tensor rv = Tensor::from_data({3}, {0.8f, 1.2f, 1.5f});
    ops::BatchNormOptions opt;
    opt.training = p.training;
    std::vector<Tensor> inputs{x, w, b};
    if (p.tail != Tail::kRelu) inputs.push_back(res);
    GradCheckOptions gc;
    gc.max_samples = 96;
    gc.kink_tolerance = 0;  // smooth: no output is near the ReLU's kink (away_from_kink)
    auto r = grad_check(
        [&](const std::vector<Tensor>& in) {
          const bool residual = p.tail != Tail::kRelu;
          const ops::BatchNormTail tail{
              .residual = residual ? in[3] : Tensor(),
              .relu = p.tail == Tail::kRelu || p.tail == Tail::kResidualRelu};
          Tensor y = ops::batch_norm(in[0], in[1], in[2], rm, rv, opt, tail);
          if (p.tail == Tail::kResidualThenRelu) y = ops::relu(y);
          if (p.r_added) y = ops::add(y, in[3]);
          return p.x_added ? ops::add(y, in[0]) : y;
        },
        inputs, gc);
    CHECK_MESSAGE(r.ok, r.message);
    // Checked: x, the residual when there is one, weight and bias unless frozen.
    const int64_t per_tensor = std::min<int64_t>(96, x.numel());
    const int64_t tensors = static_cast<int64_t>(inputs.size()) - 2;
    CHECK(r.checked + r.skipped == per_tensor * tensors + (p.frozen ? 0 : 6));
  }
}

TEST_CASE("batch_norm tails are bit for bit the plain composition, values and gradients") {
  // The plain chain: bn, then ops::add and ops::relu (a scale by 1 in front
  // of a lone relu, so that it is not fused by relu_of_batch_norm).
  struct Case {
    int64_t H;
    bool training, residual, relu;
  };
  for (const Case k :
       {Case{3, true, false, true}, Case{11, true, false, true}, Case{12, false, false, true},
        Case{3, true, true, true}, Case{11, true, true, true}, Case{12, false, true, true},
        Case{12, true, true, false}, Case{3, false, true, false}}) {
    CAPTURE(k.H);
    CAPTURE(k.training);
    CAPTURE(k.residual);
    CAPTURE(k.relu);
    Generator gen(51);
    const Tensor x0 = Tensor::randn({5, 4, k.H, k.H}, gen);
    const Tensor w0 = Tensor::randn({4}, gen, 1.f, 0.5f);
    const Tensor b0 = Tensor::randn({4}, gen, 0.f, 0.5f);
    const Tensor r0 = Tensor::randn(x0.shape(), gen);
    const Tensor seed = Tensor::randn(x0.shape(), gen);
    std::vector<Tensor> outs[2];
    for (int fused = 0; fused < 2; ++fused) {
      Tensor x = x0.clone(), w = w0.clone(), b = b0.clone(), r = r0.clone();
      for (Tensor* t : {&x, &w, &b, &r}) t->set_requires_grad(true);
      Tensor rm = Tensor::from_data({4}, {0.1f, -0.2f, 0.3f, 0.f});
      Tensor rv = Tensor::from_data({4}, {0.8f, 1.2f, 1.5f, 0.5f});
      ops::BatchNormOptions opt;
      opt.training = k.training;
      Tensor y;
      if (fused) {
        y = ops::batch_norm(x, w, b, rm, rv, opt,
                            {.residual = k.residual ? r : Tensor(), .relu = k.relu});
      } else {
        y = ops::batch_norm(x, w, b, rm, rv, opt);
        y = k.residual ? ops::add(y, r) : ops::scale(y, 1.f);
        if (k.relu) y = ops::relu(y);
      }
      y.backward(seed);
      outs[fused] = {y, x.grad(), w.grad(), b.grad(), k.residual ? r.grad() : Tensor(), rm, rv};
    }
    const char* names[] = {"output",     "d x",          "d weight",   "d bias",
                           "d residual", "running mean", "running var"};
    for (size_t i = 0; i < outs[0].size(); ++i) {
      CAPTURE(std::string(names[i]));
      CHECK(bits_equal(outs[0][i], outs[1][i]));
    }
  }
}

TEST_CASE("batch_norm with x as its own residual runs the plain composition") {
  Generator gen(61);
  Tensor x = Tensor::randn({3, 2, 9, 9}, gen);
  x.set_requires_grad(true);
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  GradCheckOptions gc;
  auto r = grad_check(
      [&](const std::vector<Tensor>& in) {
        return ops::batch_norm(in[0], Tensor(), Tensor(), rm, rv, {},
                               {.residual = in[0], .relu = true});
      },
      {x}, gc);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK_THROWS_AS(
      ops::batch_norm(x, Tensor(), Tensor(), rm, rv, {}, {.residual = Tensor::zeros({3, 2, 9, 8})}),
      UsageError);
}

TEST_CASE("batch_norm validates shapes and refuses a single value per channel in training") {
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  Tensor none;
  CHECK_THROWS_AS(ops::batch_norm(Tensor::zeros({4, 3, 2, 2}), Tensor::ones({2}), none, rm, rv, {}),
                  UsageError);
  CHECK_THROWS_AS(ops::batch_norm(Tensor::zeros({1, 2}), none, none, rm, rv, {}), UsageError);
  CHECK_THROWS_AS(ops::batch_norm(Tensor::zeros({4}), none, none, rm, rv, {}), UsageError);
  ops::BatchNormOptions eval;
  eval.training = false;
  CHECK(ops::batch_norm(Tensor::ones({1, 2}), none, none, rm, rv, eval).numel() == 2);
  CHECK_THROWS_AS(ops::batch_norm(Tensor::ones({1, 2}), none, none, none, none, eval), UsageError);
}

TEST_CASE("batch_norm forward and backward are bit-identical for 1 and 2 threads") {
  // Big enough that the channel loop really splits across threads.
  Generator gen(21);
  const Tensor x0 = Tensor::randn({8, 32, 16, 16}, gen);
  const Tensor w0 = Tensor::randn({32}, gen);
  const Tensor seed = Tensor::randn(x0.shape(), gen);
  const Tensor r0 = Tensor::randn(x0.shape(), gen);
  const int saved = num_threads();
  for (const bool tail : {false, true}) {
    CAPTURE(tail);
    std::vector<Tensor> ys, dxs, dws, drs, rms;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Tensor x = x0.clone(), w = w0.clone(), b = Tensor::zeros({32}), r = r0.clone();
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      r.set_requires_grad(true);
      Tensor rm = Tensor::zeros({32}), rv = Tensor::ones({32});
      Tensor y = tail ? ops::batch_norm(x, w, b, rm, rv, {}, {.residual = r, .relu = true})
                      : ops::batch_norm(x, w, b, rm, rv, {});
      y.backward(seed);
      ys.push_back(y);
      dxs.push_back(x.grad());
      dws.push_back(w.grad());
      drs.push_back(r.grad());
      rms.push_back(rv);
    }
    set_num_threads(saved);
    CHECK(bits_equal(ys[0], ys[1]));
    CHECK(bits_equal(dxs[0], dxs[1]));
    CHECK(bits_equal(dws[0], dws[1]));
    CHECK(bits_equal(drs[0], drs[1]));
    CHECK(bits_equal(rms[0], rms[1]));
  }
}
