// conv2d_fused and batch_norm_eval_affine: the one-pass inference conv
// against the plain op sequence conv2d -> batch_norm (eval) -> add -> relu,
// on every kernel the forward can take (Winograd, direct dense at stride 1 and 2,
// direct 1x1 in place, pointwise GEMM on small planes in chunks and one
// sample at a time, grouped im2col GEMM, direct and portable depthwise),
// with pruned (zeroed) weights, partial channel blocks, 1 and 2 threads;
// plus the no-graph contract and shape checks.
//
// conv2d_fused is inference only: it records no graph and refuses inputs that
// require a gradient, so it has no backward to check. The backward of every
// conv kernel is gradient-checked in test_conv2d.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/batch_norm.h"
#include "core/ops/conv2d.h"
#include "core/ops/elementwise.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace spruce;

namespace {

struct Case {
  int64_t N, C, OC, H, W, KH, KW, stride, padding, groups;
  const char* path;  // the kernel it exercises, for the report
};

/// A batch norm's parameters and running statistics with values far from
/// the identity, so that a dropped or misplaced scale or shift shows.
struct BatchNormState {
  Tensor weight, bias, mean, var;
  BatchNormState(int64_t C, Generator& gen, bool affine)
      : weight(affine ? Tensor::rand({C}, gen, 0.5f, 2.f) : Tensor()),
        bias(affine ? Tensor::randn({C}, gen) : Tensor()),
        mean(Tensor::randn({C}, gen, 0.f, 0.5f)),
        var(Tensor::rand({C}, gen, 0.3f, 3.f)) {}
};

constexpr float kEps = 1e-5f;

/// The plain eval-mode sequence: relu?(batch_norm(conv2d(x, w)) + residual).
Tensor plain(const Tensor& x, const Tensor& w, BatchNormState& bn, const Tensor& residual,
             bool relu, const ops::Conv2dOptions& o) {
  Tensor y = ops::batch_norm(ops::conv2d(x, w, Tensor(), o), bn.weight, bn.bias, bn.mean, bn.var,
                             {.training = false, .eps = kEps});
  if (residual.defined()) y = ops::add(y, residual);
  return relu ? ops::relu(y) : y;
}

Tensor fused(const Tensor& x, const Tensor& w, const BatchNormState& bn, const Tensor& residual,
             bool relu, const ops::Conv2dOptions& o) {
  const ops::ChannelAffine a =
      ops::batch_norm_eval_affine(bn.weight, bn.bias, bn.mean, bn.var, kEps);
  return ops::conv2d_fused(x, w, {a.scale, a.shift, residual, relu}, o);
}

/// Largest |a - b| relative to the largest |b| (at least 1).
double max_rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(double(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::abs(double(b.data()[i])));
  }
  return diff / scale;
}

std::string describe(const Case& c, bool residual, bool relu, int threads) {
  std::ostringstream os;
  os << c.path << ": N" << c.N << " C" << c.C << "->" << c.OC << " " << c.H << "x" << c.W << " k"
     << c.KH << "x" << c.KW << " s" << c.stride << " p" << c.padding << " g" << c.groups
     << (residual ? " +residual" : "") << (relu ? " relu" : "") << " threads " << threads;
  return os.str();
}

}  // namespace

TEST_CASE("conv2d_fused matches conv2d -> batch_norm (eval) -> add -> relu on every kernel") {
  const Case cases[] = {
      {4, 3, 16, 9, 9, 3, 3, 1, 1, 1, "direct 3x3"},
      {4, 16, 32, 9, 7, 3, 3, 1, 1, 1, "Winograd 3x3 (AVX2 + FMA), odd plane"},
      {1, 16, 16, 6, 6, 3, 3, 1, 1, 1, "direct 3x3, one sample"},
      {3, 16, 20, 10, 10, 3, 3, 2, 1, 1, "direct 3x3 stride 2, partial block"},
      {4, 16, 32, 8, 8, 1, 1, 2, 0, 1, "direct 1x1 stride 2 (projection)"},
      {2, 12, 24, 8, 8, 1, 1, 1, 0, 1, "direct 1x1 in place"},
      {6, 24, 40, 4, 4, 1, 1, 1, 0, 1, "pointwise GEMM, chunked"},
      {1, 24, 40, 2, 2, 1, 1, 1, 0, 1, "pointwise GEMM, one sample"},
      {4, 8, 12, 8, 8, 3, 3, 1, 1, 2, "grouped im2col GEMM, chunked"},
      {2, 4, 6, 24, 24, 3, 3, 1, 1, 2, "grouped im2col GEMM, one sample"},
      {4, 12, 12, 9, 9, 3, 3, 1, 1, 12, "direct depthwise"},
      {5, 20, 20, 8, 8, 3, 3, 2, 1, 20, "direct depthwise stride 2"},
      {3, 10, 10, 6, 6, 1, 3, 1, 0, 10, "portable depthwise"},
  };
  Generator gen(42);
  const int saved_threads = num_threads();
  for (const Case& c : cases) {
    const int64_t OH = (c.H + 2 * c.padding - c.KH) / c.stride + 1;
    const int64_t OW = (c.W + 2 * c.padding - c.KW) / c.stride + 1;
    const ops::Conv2dOptions o{.stride = c.stride, .padding = c.padding, .groups = c.groups};
    const Tensor x = Tensor::randn({c.N, c.C, c.H, c.W}, gen);
    Tensor w = Tensor::randn({c.OC, c.C / c.groups, c.KH, c.KW}, gen, 0.f, 0.5f);
    for (int64_t i = 0; i < w.numel(); i += 3) w.data()[i] = 0.f;  // pruned weights
    const Tensor residual = Tensor::randn({c.N, c.OC, OH, OW}, gen);
    for (const bool affine : {true, false}) {
      BatchNormState bn(c.OC, gen, affine);
      for (const int threads : {1, 2}) {
        set_num_threads(threads);
        for (const bool with_residual : {false, true})
          for (const bool relu : {false, true}) {
            const Tensor r = with_residual ? residual : Tensor();
            INFO(describe(c, with_residual, relu, threads) << (affine ? "" : " non-affine"));
            const Tensor want = plain(x, w, bn, r, relu, o);
            const Tensor got = fused(x, w, bn, r, relu, o);
            CHECK(max_rel_diff(got, want) < 1e-5);
            if (relu) CHECK(*std::min_element(got.data(), got.data() + got.numel()) == 0.f);
          }
      }
    }
  }
  set_num_threads(saved_threads);
}

TEST_CASE("conv2d_fused without scale and shift is conv2d, bit for bit") {
  Generator gen(7);
  const Tensor x = Tensor::randn({4, 8, 10, 10}, gen);
  const Tensor w = Tensor::randn({16, 8, 3, 3}, gen);
  const ops::Conv2dOptions o{.stride = 1, .padding = 1};
  const Tensor want = ops::conv2d(x, w, Tensor(), o);
  const Tensor got = ops::conv2d_fused(x, w, {}, o);
  CHECK(std::equal(got.data(), got.data() + got.numel(), want.data()));
}

TEST_CASE("batch_norm_eval_affine is the map eval batch_norm applies") {
  Generator gen(3);
  BatchNormState bn(5, gen, true);
  const ops::ChannelAffine a =
      ops::batch_norm_eval_affine(bn.weight, bn.bias, bn.mean, bn.var, kEps);
  const Tensor x = Tensor::randn({2, 5, 3, 3}, gen);
  const Tensor y =
      ops::batch_norm(x, bn.weight, bn.bias, bn.mean, bn.var, {.training = false, .eps = kEps});
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 9) % 5;
    CHECK(y.data()[i] ==
          doctest::Approx(a.scale.data()[c] * x.data()[i] + a.shift.data()[c]).epsilon(1e-5));
  }
  // Read afresh: a changed running statistic changes the map.
  bn.var.data()[2] *= 4.f;
  const ops::ChannelAffine b =
      ops::batch_norm_eval_affine(bn.weight, bn.bias, bn.mean, bn.var, kEps);
  CHECK(b.scale.data()[2] == doctest::Approx(a.scale.data()[2] / 2).epsilon(1e-3));
  Tensor undefined;
  CHECK_THROWS_AS(ops::batch_norm_eval_affine(bn.weight, bn.bias, undefined, bn.var, kEps),
                  UsageError);
}

TEST_CASE("conv2d_fused records no graph and checks its shapes") {
  Generator gen(5);
  const Tensor x = Tensor::randn({2, 4, 6, 6}, gen);
  Tensor w = Tensor::randn({8, 4, 3, 3}, gen);
  const ops::Conv2dOptions o{.padding = 1};
  w.set_requires_grad(true);
  CHECK_THROWS_AS(ops::conv2d_fused(x, w, {}, o), UsageError);
  {
    NoGradGuard no_grad;  // the intended use: inference
    const Tensor out = ops::conv2d_fused(x, w, {.relu = true}, o);
    CHECK(out.shape() == Shape{2, 8, 6, 6});
    CHECK_FALSE(out.requires_grad());
    CHECK_THROWS_AS(ops::conv2d_fused(x, w, {.scale = Tensor::ones({7})}, o), UsageError);
    CHECK_THROWS_AS(ops::conv2d_fused(x, w, {.residual = Tensor::zeros({2, 8, 5, 6})}, o),
                    UsageError);
  }
}
