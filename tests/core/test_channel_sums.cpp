// ChannelSums (core/ops/channel_sums.h): the per-sample, per-channel sums a
// Winograd conv takes of its output for the batch norm that follows, and the
// batch norm's use of them.
//
// Code paths:
//   conv2d          Winograd (3x3 stride 1: the sums are filled, checked
//                   against a double sum over the output, bit-identical for 1
//                   and 2 threads, the output unchanged) or any other kernel
//                   (stride 2, depthwise: not filled)
//   batch_norm      sums used (the statistics, running statistics, output and
//                   gradients of the pass it replaces, within float rounding)
//                   or a channel block summed again: its mean more than 2
//                   standard deviations from the center (checked with centers
//                   1000 away, ~400 deviations, where the sums alone lose the variance)
//                   or sums of the wrong size
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/ops/batch_norm.h"
#include "core/ops/channel_sums.h"
#include "core/ops/conv2d.h"
#include "core/ops/conv2d_winograd.h"
#include "core/ops/elementwise.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;
using spruce::test::skip_unless;

namespace {

const bool kNoWinograd =
    skip_unless(ops::winograd::supports(test::conv_geometry(2, 16, 16, 8, 8, 3, 3, 1, 1)),
                "built without AVX2 + FMA: no Winograd kernel to take the sums");

/// A conv output with a per-channel offset and spread (channel c: about c - 8
/// plus the conv), its sums about `center`.
struct Case {
  Tensor x, w, b, y;
  ops::ChannelSums sums;
  Case(int64_t N, int64_t C, int64_t OC, int64_t H, uint64_t seed, std::vector<float> center) {
    Generator gen(seed);
    x = Tensor::randn({N, C, H, H}, gen);
    w = Tensor::randn({OC, C, 3, 3}, gen, 0.f, 0.2f);
    b = Tensor::empty({OC});
    for (int64_t c = 0; c < OC; ++c) b.data()[c] = static_cast<float>(c - 8);
    sums.center = std::move(center);
    y = ops::conv2d(x, w, b, {.stride = 1, .padding = 1}, &sums);
  }
};

std::vector<float> random_center(int64_t C, uint64_t seed) {
  Generator gen(seed);
  const Tensor t = Tensor::randn({C}, gen, 0.f, 3.f);
  return {t.data(), t.data() + C};
}

ops::ChannelSums centered_on_zero(int64_t C) {
  ops::ChannelSums s;
  s.center.assign(static_cast<size_t>(C), 0.f);
  return s;
}

double max_rel(const Tensor& a, const Tensor& b) {
  double m = 0, scale = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a.at(i)) - b.at(i)));
    scale = std::max(scale, std::abs(static_cast<double>(b.at(i))));
  }
  return m / scale;
}

}  // namespace

TEST_CASE("a Winograd conv fills the sums of its output about the center" *
          doctest::skip(kNoWinograd)) {
  for (const int64_t H : {7, 8, 14, 28}) {  // group_samples planes, odd tile rows, several blocks
    CAPTURE(H);
    const int64_t N = 3, OC = 32;
    Case k(N, 16, OC, H, 40 + static_cast<uint64_t>(H), random_center(OC, 41));
    REQUIRE(k.sums.filled);
    REQUIRE(k.sums.s1.size() == static_cast<size_t>(N * OC));
    REQUIRE(k.sums.s2.size() == static_cast<size_t>(N * OC));
    const int64_t P = H * H;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < OC; ++c) {
        double a = 0, q = 0, scale = 0;
        for (int64_t p = 0; p < P; ++p) {
          const double d = static_cast<double>(k.y.at((n * OC + c) * P + p)) - k.sums.center[c];
          a += d, q += d * d, scale += std::abs(d);
        }
        const size_t i = static_cast<size_t>(n * OC + c);
        CHECK(std::abs(k.sums.s1[i] - a) <= 1e-5 * scale);
        CHECK(k.sums.s2[i] == doctest::Approx(q).epsilon(1e-5));
      }
    // The output is conv2d's without sums, bit for bit.
    const Tensor plain = ops::conv2d(k.x, k.w, k.b, {.stride = 1, .padding = 1});
    CHECK(std::equal(plain.data(), plain.data() + plain.numel(), k.y.data()));
  }
}

TEST_CASE("the sums are the same bits for 1 and 2 threads" * doctest::skip(kNoWinograd)) {
  const int prev = num_threads();
  set_num_threads(1);
  Case one(5, 16, 16, 14, 50, random_center(16, 51));
  set_num_threads(2);
  Case two(5, 16, 16, 14, 50, random_center(16, 51));
  set_num_threads(prev);
  CHECK(one.sums.s1 == two.sums.s1);
  CHECK(one.sums.s2 == two.sums.s2);
}

TEST_CASE("convs off the Winograd kernel leave the sums unfilled") {
  Generator gen(60);
  const Tensor x = Tensor::randn({2, 16, 8, 8}, gen);
  ops::ChannelSums strided = centered_on_zero(32);
  ops::conv2d(x, Tensor::randn({32, 16, 3, 3}, gen), Tensor(), {.stride = 2, .padding = 1},
              &strided);
  CHECK_FALSE(strided.filled);
  ops::ChannelSums depthwise = centered_on_zero(16);
  ops::conv2d(x, Tensor::randn({16, 1, 3, 3}, gen), Tensor(), {.padding = 1, .groups = 16},
              &depthwise);
  CHECK_FALSE(depthwise.filled);
  ops::ChannelSums wrong_center = centered_on_zero(3);  // not C_out values
  ops::conv2d(x, Tensor::randn({32, 16, 3, 3}, gen), Tensor(), {.padding = 1}, &wrong_center);
  CHECK_FALSE(wrong_center.filled);
}

TEST_CASE("batch_norm on a conv's sums: the statistics and gradients of its own pass" *
          doctest::skip(kNoWinograd)) {
  const int64_t N = 4, OC = 32, H = 14;
  // Centers at 0 (what conv_batch_norm uses; the biases put some channel
  // means beyond 2 deviations of it), near the means, and 1000 off (~400
  // deviations: those channel blocks are summed again).
  for (const float off : {0.f, 1.f, 1000.f}) {
    CAPTURE(off);
    std::vector<float> center(OC);
    for (int64_t c = 0; c < OC; ++c) center[c] = off == 0.f ? 0.f : static_cast<float>(c - 8) + off;
    Case k(N, 16, OC, H, 70, center);
    REQUIRE(k.sums.filled);
    Generator gen(71);
    const Tensor gamma = Tensor::rand({OC}, gen, 0.5f, 2.f), beta = Tensor::randn({OC}, gen);
    Tensor rm1 = Tensor::zeros({OC}), rv1 = Tensor::ones({OC});
    Tensor rm2 = Tensor::zeros({OC}), rv2 = Tensor::ones({OC});
    Tensor x1 = k.y.clone(), x2 = k.y.clone();
    x1.set_requires_grad(true), x2.set_requires_grad(true);
    ops::BatchNormOptions with{.sums = &k.sums};
    const Tensor a = ops::batch_norm(x1, gamma, beta, rm1, rv1, with, {.relu = true});
    const Tensor b = ops::batch_norm(x2, gamma, beta, rm2, rv2, {}, {.relu = true});
    CHECK(max_rel(a, b) < 2e-6);
    CHECK(max_rel(rm1, rm2) < 1e-6);
    CHECK(max_rel(rv1, rv2) < 1e-6);
    const Tensor seed = Tensor::randn(a.shape(), gen);
    a.backward(seed);
    b.backward(seed);
    CHECK(max_rel(x1.grad(), x2.grad()) < 1e-5);
  }
}

TEST_CASE("batch_norm ignores sums of another size" * doctest::skip(kNoWinograd)) {
  Case k(2, 16, 16, 8, 80, std::vector<float>(16, 0.f));
  REQUIRE(k.sums.filled);
  k.sums.s1.resize(8), k.sums.s2.resize(8);  // as if from another tensor
  Tensor rm1 = Tensor::zeros({16}), rv1 = Tensor::ones({16});
  Tensor rm2 = Tensor::zeros({16}), rv2 = Tensor::ones({16});
  ops::BatchNormOptions with{.sums = &k.sums};
  const Tensor a = ops::batch_norm(k.y, Tensor(), Tensor(), rm1, rv1, with);
  const Tensor b = ops::batch_norm(k.y, Tensor(), Tensor(), rm2, rv2, {});
  CHECK(std::equal(a.data(), a.data() + a.numel(), b.data()));
}
