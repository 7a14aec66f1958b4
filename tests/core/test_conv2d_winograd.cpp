// The Winograd F(4x4, 3x3) forward (core/ops/conv2d_winograd) against a
// double-precision direct sum: on small integers every output rounds to the
// exact sum (a wrong transform coefficient moves outputs by whole units),
// within float rounding on random data (the transforms' coefficients, up to
// 8 and 1/24, cost a few times the direct sum's rounding), with odd and even planes, several
// channel blocks, the fused epilogue (scale, shift, residual, ReLU), 1 and 2 threads; the weight
// gradient by the adjoint transforms; and which convs take it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/ops/conv2d.h"
#include "core/ops/conv2d_winograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;
using spruce::test::skip_unless;

namespace {

ops::ConvGeometry geometry(int64_t N, int64_t C, int64_t OC, int64_t H, int64_t W) {
  return test::conv_geometry(N, C, OC, H, W, 3, 3, 1, 1);
}

/// Every case below is skipped when the build has no Winograd kernels (no
/// AVX2 + FMA); an AVX2 build (-march=haswell) tests the 8-lane code, an
/// AVX-512 build the 16-lane one.
const bool kNoWinograd = skip_unless(ops::winograd::supports(geometry(2, 16, 16, 8, 8)),
                                     "built without AVX2 + FMA: no Winograd kernels to test "
                                     "(conv2d uses its other kernels)");

std::vector<float> run(const ops::ConvGeometry& g, const std::vector<float>& x,
                       const std::vector<float>& w, const ops::ConvOutput& o) {
  std::vector<float> out(static_cast<size_t>(g.N * g.OC * g.H * g.W), -7.f);
  ops::winograd::forward(x.data(), w.data(), o, g, 0, g.N, out.data());
  return out;
}

std::vector<float> random_values(size_t n, Generator& gen, float lo, float hi) {
  const Tensor t = Tensor::rand({static_cast<int64_t>(n)}, gen, lo, hi);
  return {t.data(), t.data() + n};
}

}  // namespace

TEST_CASE("Winograd conv rounds to the exact sum on small integers" * doctest::skip(kNoWinograd)) {
  Generator gen(3);
  const ops::ConvGeometry g = geometry(3, 32, 32, 7, 9);
  std::vector<float> x = random_values(static_cast<size_t>(g.N * g.C * g.H * g.W), gen, -4, 4);
  std::vector<float> w = random_values(static_cast<size_t>(g.OC * g.C * 9), gen, -3, 3);
  for (float& v : x) v = std::round(v);
  for (float& v : w) v = std::round(v);
  const std::vector<double> want = test::reference_conv(g, x.data(), w.data(), {});
  const std::vector<float> got = run(g, x, w, {});
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(std::round(double(got[i])) == want[i]);
}

TEST_CASE("Winograd conv matches the direct sum within float rounding" *
          doctest::skip(kNoWinograd)) {
  struct Case {
    int64_t N, C, OC, H, W;
  };
  const Case cases[] = {
      {2, 16, 16, 28, 28},  // ResNet-20 stage 1 on Fashion-MNIST
      {3, 32, 48, 7, 7},    // odd plane: the last tile row and column half used
      {2, 64, 16, 5, 8},    // four input blocks, non-square
      {4, 16, 32, 2, 2},    // one tile
      {6, 16, 32, 7, 7},    // small plane: 4 samples' tiles a block, then 2
      {2, 48, 64, 16, 3},
  };
  Generator gen(11);
  const int saved = num_threads();
  for (const Case& c : cases) {
    const ops::ConvGeometry g = geometry(c.N, c.C, c.OC, c.H, c.W);
    const auto x = random_values(static_cast<size_t>(g.N * g.C * g.H * g.W), gen, -1, 1);
    auto w = random_values(static_cast<size_t>(g.OC * g.C * 9), gen, -0.3f, 0.3f);
    for (size_t i = 0; i < w.size(); i += 4) w[i] = 0.f;  // pruned weights
    const auto scale = random_values(static_cast<size_t>(g.OC), gen, 0.5f, 2.f);
    const auto shift = random_values(static_cast<size_t>(g.OC), gen, -1, 1);
    const auto res = random_values(static_cast<size_t>(g.N * g.OC * g.H * g.W), gen, -1, 1);
    const ops::ConvOutput plain{}, fused{scale.data(), shift.data(), res.data(), true};
    for (const ops::ConvOutput& o : {plain, fused}) {
      const std::vector<double> want = test::reference_conv(g, x.data(), w.data(), o);
      double scale_max = 1;
      for (const double v : want) scale_max = std::max(scale_max, std::abs(v));
      for (const int threads : {1, 2}) {
        set_num_threads(threads);
        INFO("N" << c.N << " C" << c.C << "->" << c.OC << " " << c.H << "x" << c.W
                 << (o.relu ? " fused" : "") << " threads " << threads);
        const std::vector<float> got = run(g, x, w, o);
        double diff = 0;
        for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::abs(got[i] - want[i]));
        CHECK(diff / scale_max < 2e-5);
      }
    }
  }
  set_num_threads(saved);
}

TEST_CASE("Winograd takes batched 3x3 stride-1 pad-1 convs of whole channel blocks only" *
          doctest::skip(kNoWinograd)) {
  CHECK(ops::winograd::supports(geometry(128, 64, 64, 7, 7)));
  CHECK_FALSE(ops::winograd::supports(geometry(1, 16, 16, 8, 8)));  // one sample: direct
  CHECK_FALSE(ops::winograd::supports(geometry(2, 3, 16, 8, 8)));   // first conv
  CHECK_FALSE(ops::winograd::supports(geometry(2, 16, 20, 8, 8)));  // partial output block
  ops::ConvGeometry g = geometry(2, 16, 16, 8, 8);
  g.stride = 2, g.OH = g.OW = 4;
  CHECK_FALSE(ops::winograd::supports(g));
  g = geometry(2, 16, 16, 8, 8);
  g.padding = 0, g.OH = g.OW = 6;
  CHECK_FALSE(ops::winograd::supports(g));
}

TEST_CASE("conv2d routes to Winograd: its output equals winograd::forward bit for bit" *
          doctest::skip(kNoWinograd)) {
  Generator gen(5);
  const Tensor x = Tensor::randn({4, 16, 10, 10}, gen);
  const Tensor w = Tensor::randn({32, 16, 3, 3}, gen, 0.f, 0.2f);
  const Tensor y = ops::conv2d(x, w, Tensor(), {.stride = 1, .padding = 1});
  const std::vector<float> xs(x.data(), x.data() + x.numel()), ws(w.data(), w.data() + w.numel());
  const std::vector<float> want = run(geometry(4, 16, 32, 10, 10), xs, ws, {});
  CHECK(std::equal(want.begin(), want.end(), y.data()));
}

TEST_CASE("Winograd weight gradient matches the direct sum, the same for 1 and 2 threads" *
          doctest::skip(kNoWinograd)) {
  struct Case {
    int64_t N, C, OC, H, W;
  };
  const Case cases[] = {{2, 16, 16, 28, 28},
                        {3, 32, 48, 7, 7},
                        {2, 16, 32, 5, 8},
                        {4, 32, 16, 2, 3},
                        {6, 16, 32, 7, 7}};  // 7x7: blocks of 4 samples' tiles, then 2
  Generator gen(13);
  const int saved = num_threads();
  for (const Case& c : cases) {
    const ops::ConvGeometry g = geometry(c.N, c.C, c.OC, c.H, c.W);
    const auto x = random_values(static_cast<size_t>(g.N * g.C * g.H * g.W), gen, -1, 1);
    const auto d = random_values(static_cast<size_t>(g.N * g.OC * g.H * g.W), gen, -1, 1);
    const std::vector<double> want =
        test::reference_conv_backward(g, x.data(), nullptr, d.data()).dw;
    double scale_max = 1;
    for (const double v : want) scale_max = std::max(scale_max, std::abs(v));
    std::vector<std::vector<float>> got;
    for (const int threads : {1, 2}) {
      set_num_threads(threads);
      std::vector<float> dw(want.size(), 0.5f);  // added to, not assigned
      ops::winograd::weight_grad(d.data(), x.data(), g, 0, g.N, dw.data());
      double diff = 0;
      for (size_t i = 0; i < dw.size(); ++i) diff = std::max(diff, std::abs(dw[i] - 0.5 - want[i]));
      INFO("N" << c.N << " C" << c.C << "->" << c.OC << " " << c.H << "x" << c.W << " threads "
               << threads);
      CHECK(diff / scale_max < 2e-5);
      got.push_back(dw);
    }
    CHECK(got[0] == got[1]);
  }
  set_num_threads(saved);
}
