// The fused pair of 3x3 convs (core/ops/conv2d_pair, ResNet's basic block in
// inference): on the stride-1 blocks of ResNet-20 (16, 32 and 64 channels
// on 28x28, 14x14 and 7x7 planes: whole, padded and odd tiles), a widening
// pair (16 -> 32 -> 48) and a non-square plane, with and without a residual
// and ReLU, on 1 and 2 threads: bit for bit the two conv2d_fused calls it
// stands for, and within Winograd's rounding of the double reference; and
// which calls run fused (Winograd geometries only) and which as the two calls.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/ops/conv2d.h"
#include "core/ops/conv2d_pair.h"
#include "core/ops/conv2d_winograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;

namespace {

/// Skipped where the build has no Winograd kernels (no AVX2 + FMA): the pair
/// then always runs as the two calls.
const bool kNoWinograd = spruce::test::skip_unless(
    ops::winograd::supports(test::conv_geometry(2, 16, 16, 8, 8, 3, 3, 1, 1)),
    "built without AVX2 + FMA: no Winograd kernels, so nothing runs fused");

struct Case {
  int64_t N, C, M, OC, H, W;
};

/// The pair's inputs: x, both weights (a quarter of them pruned), both
/// batch norms as scale and shift, a residual.
struct Inputs {
  Tensor x, w1, w2, s1, h1, s2, h2, res;
  Inputs(const Case& c, Generator& gen) {
    x = Tensor::rand({c.N, c.C, c.H, c.W}, gen, -1, 1);
    w1 = Tensor::rand({c.M, c.C, 3, 3}, gen, -0.2f, 0.2f);
    w2 = Tensor::rand({c.OC, c.M, 3, 3}, gen, -0.2f, 0.2f);
    for (int64_t i = 0; i < w1.numel(); i += 4) w1.data()[i] = 0.f;
    s1 = Tensor::rand({c.M}, gen, 0.5f, 2.f), h1 = Tensor::rand({c.M}, gen, -0.5f, 0.5f);
    s2 = Tensor::rand({c.OC}, gen, 0.5f, 2.f), h2 = Tensor::rand({c.OC}, gen, -0.5f, 0.5f);
    res = Tensor::rand({c.N, c.OC, c.H, c.W}, gen, -1, 1);
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.numel(), b.data());
}

}  // namespace

TEST_CASE("conv2d_pair_fused equals the two conv2d_fused calls bit for bit" *
          doctest::skip(kNoWinograd)) {
  const Case cases[] = {
      {4, 16, 16, 16, 28, 28},  // ResNet-20 stage 1 on Fashion-MNIST: whole tiles
      {3, 32, 32, 32, 14, 14},  // stage 2: the last tile row and column half used
      {5, 64, 64, 64, 7, 7},    // stage 3: 2 x 2 tiles for 7 x 7
      {2, 16, 32, 48, 9, 6},    // widening, non-square
  };
  const ops::Conv2dOptions same{.stride = 1, .padding = 1};
  NoGradGuard no_grad;
  Generator gen(21);
  const int saved = num_threads();
  for (const Case& c : cases) {
    const Inputs in(c, gen);
    for (const bool tail : {false, true}) {
      const ops::ConvEpilogue e1{.scale = in.s1, .shift = in.h1, .relu = tail};
      const ops::ConvEpilogue e2{
          .scale = in.s2, .shift = in.h2, .residual = tail ? in.res : Tensor(), .relu = tail};
      for (const int threads : {1, 2}) {
        set_num_threads(threads);
        CAPTURE(c.C);
        CAPTURE(c.H);
        CAPTURE(tail);
        CAPTURE(threads);
        const Tensor want =
            ops::conv2d_fused(ops::conv2d_fused(in.x, in.w1, e1, same), in.w2, e2, same);
        const int64_t runs = ops::conv2d_pair_fused_runs();
        const Tensor got = ops::conv2d_pair_fused(in.x, in.w1, e1, in.w2, e2);
        CHECK(ops::conv2d_pair_fused_runs() == runs + 1);
        CHECK(same_bits(got, want));
      }
    }
  }
  set_num_threads(saved);
}

TEST_CASE("conv2d_pair_fused is the pair of convs within Winograd's rounding" *
          doctest::skip(kNoWinograd)) {
  // Against a double-precision direct sum of the two convs (the first one's
  // output rounded to float and ReLU-ed, as the pair hands it over).
  const Case c{2, 16, 32, 16, 10, 7};
  Generator gen(5);
  const Inputs in(c, gen);
  NoGradGuard no_grad;
  const ops::ConvEpilogue e1{.scale = in.s1, .shift = in.h1, .relu = true};
  const ops::ConvEpilogue e2{.scale = in.s2, .shift = in.h2, .residual = in.res, .relu = true};
  const Tensor got = ops::conv2d_pair_fused(in.x, in.w1, e1, in.w2, e2);

  const ops::ConvGeometry g1 = test::conv_geometry(c.N, c.C, c.M, c.H, c.W, 3, 3, 1, 1);
  const ops::ConvGeometry g2 = test::conv_geometry(c.N, c.M, c.OC, c.H, c.W, 3, 3, 1, 1);
  const ops::ConvOutput o1{.scale = in.s1.data(), .shift = in.h1.data(), .relu = true};
  const ops::ConvOutput o2{
      .scale = in.s2.data(), .shift = in.h2.data(), .residual = in.res.data(), .relu = true};
  const std::vector<double> mid = test::reference_conv(g1, in.x.data(), in.w1.data(), o1);
  const std::vector<float> midf(mid.begin(), mid.end());
  const std::vector<double> want = test::reference_conv(g2, midf.data(), in.w2.data(), o2);
  double diff = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(got.data()[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  CHECK(diff / scale < 5e-5);
}

TEST_CASE("conv2d_pair_fused runs fused only where both convs take Winograd" *
          doctest::skip(kNoWinograd)) {
  NoGradGuard no_grad;
  Generator gen(8);
  auto runs_fused = [&](const Case& c) {
    const Inputs in(c, gen);
    const int64_t before = ops::conv2d_pair_fused_runs();
    const Tensor y = ops::conv2d_pair_fused(in.x, in.w1, {.relu = true}, in.w2, {});
    CHECK(y.shape() == Shape{c.N, c.OC, c.H, c.W});
    return ops::conv2d_pair_fused_runs() == before + 1;
  };
  CHECK(runs_fused({2, 16, 16, 16, 8, 8}));
  CHECK_FALSE(runs_fused({1, 16, 16, 16, 8, 8}));  // one sample: the direct kernels
  CHECK_FALSE(runs_fused({2, 3, 16, 16, 8, 8}));   // a first conv's 3 channels
  CHECK_FALSE(runs_fused({2, 16, 20, 16, 8, 8}));  // a partial channel block in the middle
}

TEST_CASE("conv2d_pair_fused records no graph: with a gradient wanted it throws as conv2d_fused") {
  Generator gen(9);
  const Inputs in({2, 16, 16, 16, 6, 6}, gen);
  Tensor w1 = in.w1;
  w1.set_requires_grad(true);
  CHECK_THROWS(ops::conv2d_pair_fused(in.x, w1, {}, in.w2, {}));
}
