// conv2d: hand-computed values, the double-precision reference of
// tests/core/conv_reference.h (forward and backward) over many configurations,
// finite-difference gradient checks, gradient accumulation, and shape
// validation.
//
// Code paths (conv2d.cpp picks one per direction from the geometry and the
// build's instruction set), each gradient-checked in "conv2d gradient checks
// on every code path", where the comment on each configuration names the
// path it takes; .ci/run builds natively, with -march=haswell and portably, so
// every path runs on some build whatever the CI machine:
//   forward   Winograd F(4x4, 3x3) (AVX-512: 3x3 s1 p1, channels in blocks of
//             16, N >= 2) | direct (AVX2: one group, padding < kernel, not a
//             1x1 on a small plane) | im2col + sgemm (grouped, small 1x1,
//             padding >= kernel, portable builds) | depthwise 8-lane tiles
//             (AVX2: square 2..5 kernels, padding < kernel) | depthwise
//             portable (other depthwise convs, portable builds)
//   d_input   Winograd of the adjoint conv (AVX-512) | direct (AVX2, stride 1)
//             | sgemm on the adjoint conv (stride 1, square, not direct) |
//             sgemm + col2im (the rest; 3x3 stride 2 pad 1 on even planes
//             through phase planes) | depthwise tiles | depthwise portable;
//             each written into a fresh gradient or added to one (checked by
//             conv(x) + conv(x), whose second backward adds to the first's)
//   d_weight  Winograd | direct | sgemm (im2col through phase planes as for
//             d_input) | depthwise; one range of samples, or
//             per-range partial sums added in order (N divisible by the
//             thread count or N >= 4 threads; tests run with 2 threads)
//   bias      present or absent
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/ops/conv2d.h"
#include "core/ops/conv2d_direct.h"
#include "core/ops/elementwise.h"
#include "core/parallel.h"
#include "core/random.h"
#include "tests/core/conv_reference.h"
#include "tests/skip.h"

using namespace spruce;
using ops::Conv2dOptions;

namespace {

struct Config {
  int64_t N, C, OC, H, W, KH, KW, stride, padding, groups;
  bool bias = true;
};

std::string describe(const Config& c) {
  std::ostringstream os;
  os << "N" << c.N << " C" << c.C << "->" << c.OC << " " << c.H << "x" << c.W << " k" << c.KH << "x"
     << c.KW << " s" << c.stride << " p" << c.padding << " g" << c.groups
     << (c.bias ? "" : " no-bias");
  return os.str();
}

ops::ConvGeometry geometry_of(const Config& c) {
  return test::conv_geometry(c.N, c.C, c.OC, c.H, c.W, c.KH, c.KW, c.stride, c.padding, c.groups);
}

/// max |a - b| relative to the size of b.
double rel_diff(const Tensor& a, const std::vector<double>& b) {
  REQUIRE(a.numel() == static_cast<int64_t>(b.size()));
  double diff = 0, scale = 1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(a.data()[i] - b[static_cast<size_t>(i)]));
    scale = std::max(scale, std::abs(b[static_cast<size_t>(i)]));
  }
  return diff / scale;
}

struct Inputs {
  Tensor x, w, b;
};

Inputs make_inputs(const Config& c, uint64_t seed) {
  Generator gen(seed);
  Inputs in;
  in.x = Tensor::randn({c.N, c.C, c.H, c.W}, gen);
  in.w = Tensor::randn({c.OC, c.C / c.groups, c.KH, c.KW}, gen, 0.f, 0.5f);
  if (c.bias) in.b = Tensor::randn({c.OC}, gen);
  return in;
}

Conv2dOptions options_of(const Config& c) { return {c.stride, c.padding, c.groups}; }

/// Fast forward and backward against the reference, for one configuration.
void check_against_reference(const Config& c) {
  CAPTURE(describe(c));
  Inputs in = make_inputs(c, 7);
  in.x.set_requires_grad(true);
  in.w.set_requires_grad(true);
  if (c.bias) in.b.set_requires_grad(true);
  Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
  const ops::ConvGeometry g = geometry_of(c);
  const std::vector<double> ref =
      test::reference_conv(g, in.x.data(), in.w.data(), {.shift = c.bias ? in.b.data() : nullptr});
  CHECK(rel_diff(out, ref) < 1e-5);

  Generator gen(11);
  const Tensor d_out = Tensor::randn(out.shape(), gen);
  out.backward(d_out);
  const test::ReferenceGrads r =
      test::reference_conv_backward(g, in.x.data(), in.w.data(), d_out.data());
  CHECK(rel_diff(in.x.grad(), r.dx) < 1e-5);
  CHECK(rel_diff(in.w.grad(), r.dw) < 1e-5);
  if (c.bias) CHECK(rel_diff(in.b.grad(), r.db) < 1e-5);
}

/// grad_check on input, weight and bias together, of conv(x) and of
/// conv(x) + conv(x) (whose second backward adds into the first's gradients).
void check_gradients(const Config& c) {
  CAPTURE(describe(c));
  for (const bool twice : {false, true}) {
    CAPTURE(twice);
    Inputs in = make_inputs(c, 3);
    std::vector<Tensor> inputs{in.x.set_requires_grad(true), in.w.set_requires_grad(true)};
    if (c.bias) inputs.push_back(in.b.set_requires_grad(true));
    GradCheckOptions o;
    // conv is linear in each input: no kinks, and a central difference of
    // any step is exact, so a large step keeps the forward's float rounding
    // (Winograd F(4x4, 3x3)'s is a few times the direct sum's) small
    // against the difference.
    o.kink_tolerance = 0;
    o.eps = 0.25f;
    o.max_samples = 48;
    const Conv2dOptions co = options_of(c);
    auto r = grad_check(
        [co, twice](const std::vector<Tensor>& t) {
          const Tensor b = t.size() > 2 ? t[2] : Tensor();
          const Tensor y = ops::conv2d(t[0], t[1], b, co);
          return twice ? ops::add(y, ops::conv2d(t[0], t[1], b, co)) : y;
        },
        inputs, o);
    CHECK_MESSAGE(r.ok, r.message);
    CHECK(r.checked >= 48);
  }
}

}  // namespace

TEST_CASE("conv2d forward matches hand-computed values") {
  SUBCASE("2x2 kernel, padding 1, stride 2, bias") {
    // Padded input (5x5): a zero frame around 1..9; windows start at 0 and 2.
    const Tensor x = Tensor::from_data({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
    const Tensor w = Tensor::from_data({1, 1, 2, 2}, {1, 2, 3, 4});
    const Tensor b = Tensor::from_data({1}, {0.5f});
    const Tensor out = ops::conv2d(x, w, b, {.stride = 2, .padding = 1});
    REQUIRE(out.shape() == Shape{1, 1, 2, 2});
    // [0 0; 0 1] -> 4;  [0 0; 2 3] -> 6 + 12;  [0 4; 0 7] -> 8 + 28;  [5 6; 8 9] -> 5+12+24+36
    const float expected[] = {4.5f, 18.5f, 36.5f, 77.5f};
    for (int i = 0; i < 4; ++i) CHECK(out.at(i) == doctest::Approx(expected[i]));
  }
  SUBCASE("two input channels, two filters, no padding") {
    const Tensor x = Tensor::from_data({1, 2, 2, 3}, {1, 2, 3, 4, 5, 6,  //
                                                      1, 0, 1, 0, 1, 0});
    // Filter 0: 1x2 [1, -1] on channel 0 and [2, 2] on channel 1; filter 1 only reads channel 1.
    const Tensor w = Tensor::from_data({2, 2, 1, 2}, {1, -1, 2, 2, 0, 0, 1, 3});
    const Tensor out = ops::conv2d(x, w);
    REQUIRE(out.shape() == Shape{1, 2, 2, 2});
    // Filter 0: (1 - 2) + 2 * 1 everywhere, as every channel-1 pair sums to 1.
    // Filter 1: [1 0 1] -> 1*1 + 3*0, 0 + 3*1;  [0 1 0] -> 0 + 3*1, 1 + 0.
    const float expected[] = {1, 1, 1, 1, 1, 3, 3, 1};
    for (int i = 0; i < 8; ++i) CHECK(out.at(i) == doctest::Approx(expected[i]));
  }
  SUBCASE("depthwise 3x3, padding 1") {
    const Tensor x = Tensor::from_data({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
    Tensor w = Tensor::zeros({2, 1, 3, 3});
    for (int k = 0; k < 9; ++k) w.data()[k] = 1.f;  // channel 0: box sum of the whole 2x2
    w.data()[9 + 5] = 1.f;                          // channel 1: the right-hand neighbour
    const Tensor b = Tensor::from_data({2}, {0.f, -1.f});
    const Tensor out = ops::conv2d(x, w, b, {.stride = 1, .padding = 1, .groups = 2});
    REQUIRE(out.shape() == Shape{1, 2, 2, 2});
    const float expected[] = {10, 10, 10, 10, 6 - 1, 0 - 1, 8 - 1, 0 - 1};
    for (int i = 0; i < 8; ++i) CHECK(out.at(i) == doctest::Approx(expected[i]));
  }
}

TEST_CASE("conv2d forward and backward match the naive reference") {
  const Config configs[] = {
      // dense: stride 1/2, padding 0/1, kernel 1/3, non-square input and kernel
      {3, 4, 6, 7, 5, 3, 3, 1, 1, 1},
      {3, 4, 6, 7, 5, 3, 3, 2, 1, 1},
      {3, 4, 6, 7, 5, 3, 3, 2, 0, 1},
      {3, 4, 6, 8, 6, 3, 3, 2, 1, 1},  // 3x3 stride 2 pad 1 on an even plane: phase planes
      {3, 4, 6, 2, 2, 3, 3, 2, 1, 2},
      {3, 4, 6, 7, 5, 1, 1, 1, 0, 1},
      {3, 4, 6, 7, 5, 1, 1, 2, 0, 1},
      {3, 4, 6, 7, 5, 1, 1, 1, 1, 1},
      {3, 3, 5, 6, 9, 3, 2, 1, 1, 1, false},
      {3, 2, 3, 4, 4, 3, 3, 3, 2, 1},
      // grouped, and groups == C with a channel multiplier (GEMM path)
      {3, 4, 6, 6, 9, 3, 3, 1, 0, 2},
      {3, 6, 6, 7, 5, 3, 3, 2, 1, 3},
      {3, 4, 4, 7, 5, 1, 1, 1, 0, 2},
      {3, 3, 6, 7, 5, 3, 3, 1, 1, 3},
      // depthwise: stride 1/2, padding 0/1/2, kernels 1/3/5, non-square
      {3, 5, 5, 7, 5, 3, 3, 1, 1, 5},
      {3, 5, 5, 7, 5, 3, 3, 2, 1, 5},
      {3, 5, 5, 8, 6, 3, 3, 2, 1, 5},
      {3, 5, 5, 7, 5, 3, 3, 1, 0, 5},
      {3, 5, 5, 7, 5, 3, 3, 2, 0, 5, false},
      {3, 4, 4, 9, 7, 5, 5, 1, 2, 4},
      {3, 4, 4, 9, 7, 5, 5, 2, 2, 4},
      {3, 4, 4, 7, 5, 1, 1, 2, 0, 4},
      {3, 4, 4, 7, 5, 1, 3, 1, 1, 4},
      {3, 4, 4, 10, 8, 4, 2, 3, 1, 4},
      {3, 2, 2, 1, 1, 3, 3, 1, 1, 2},
      // depthwise on wide planes (row copies, not index lists), several sample
      // blocks with a short last one, strides above the kernel size
      {2, 3, 3, 20, 17, 3, 3, 1, 1, 3},
      {9, 3, 3, 2, 16, 3, 3, 1, 1, 3},
      {13, 2, 2, 3, 20, 3, 3, 2, 1, 2},
      {11, 4, 4, 4, 4, 3, 3, 1, 1, 4},
      {2, 2, 2, 9, 20, 2, 2, 3, 1, 2},
      {2, 2, 2, 6, 18, 1, 1, 2, 0, 2},
      {2, 2, 2, 3, 17, 1, 1, 1, 2, 2},
      // dense stride 1 with padding >= kernel: the col2im route for d_input
      {2, 3, 4, 5, 6, 3, 3, 1, 2, 1},
      // large planes: one sample per GEMM (pointwise in place, and im2col)
      {2, 3, 4, 96, 96, 1, 1, 1, 0, 1},
      {2, 2, 3, 92, 92, 3, 3, 1, 1, 1},
      // several chunks of unequal size (11 samples of 32x32)
      {11, 2, 3, 32, 32, 3, 3, 1, 1, 1},
      {11, 3, 4, 32, 32, 1, 1, 1, 0, 1},
      {11, 3, 3, 32, 32, 3, 3, 2, 1, 3},
      {11, 3, 5, 28, 28, 3, 3, 2, 1, 1},
      // direct channel-block kernel: several blocks of 16 output channels
      // with a partial last one, rows longer and shorter than a 6-pixel
      // tile, strides 1/2/3, non-square kernels, one sample (pixel chunks)
      {5, 5, 35, 11, 9, 3, 3, 1, 1, 1},
      {5, 5, 35, 11, 9, 3, 3, 2, 1, 1},
      {3, 4, 17, 13, 14, 3, 3, 3, 1, 1},
      {3, 3, 18, 7, 7, 3, 3, 2, 1, 1, false},
      {2, 3, 20, 9, 8, 2, 3, 1, 1, 1},
      {2, 6, 33, 8, 8, 1, 1, 2, 0, 1},
      {1, 4, 40, 28, 28, 3, 3, 1, 1, 1},
      {1, 4, 24, 28, 28, 3, 3, 2, 1, 1},
      // Winograd (AVX2 + FMA): forward and d_input (the adjoint conv is again
      // 3x3 pad 1 of whole 16-channel blocks); odd and even planes
      {3, 16, 32, 7, 9, 3, 3, 1, 1, 1},
      {2, 32, 16, 6, 6, 3, 3, 1, 1, 1, false},
  };
  for (const Config& c : configs) check_against_reference(c);
}

TEST_CASE("conv2d gradient checks on every code path") {
  // Paths named as forward / d_input / d_weight on an AVX-512 build; AVX2
  // builds take "direct" where Winograd is named, portable builds im2col +
  // sgemm where direct is named and the portable depthwise kernel for tiles.
  check_gradients({2, 3, 4, 5, 6, 3, 3, 1, 1, 1});           // direct / direct / direct
  check_gradients({2, 3, 4, 7, 6, 3, 3, 2, 1, 1});           // direct / col2im / sgemm
  check_gradients({2, 3, 4, 8, 6, 3, 3, 2, 1, 1});           // even plane: phase col2im / im2col
  check_gradients({2, 3, 4, 5, 6, 1, 1, 1, 0, 1});           // 1x1 small plane: sgemm throughout
  check_gradients({2, 3, 4, 9, 9, 1, 1, 1, 0, 1});           // 1x1 on 81 pixels: direct / sgemm
  check_gradients({2, 4, 6, 5, 6, 3, 3, 1, 1, 2});           // groups 2: sgemm / adjoint sgemm
  check_gradients({2, 4, 6, 7, 6, 3, 3, 2, 1, 2});           // groups 2, stride 2: sgemm / col2im
  check_gradients({2, 3, 4, 5, 6, 3, 3, 1, 2, 1});           // padding >= kernel: sgemm / col2im
  check_gradients({2, 4, 4, 6, 5, 3, 3, 1, 1, 4});           // depthwise tiles, stride 1
  check_gradients({2, 4, 4, 7, 6, 3, 3, 2, 1, 4});           // depthwise tiles, stride 2
  check_gradients({2, 4, 4, 6, 5, 1, 3, 1, 0, 4});           // depthwise portable (1x3 kernel)
  check_gradients({2, 4, 4, 6, 5, 3, 3, 1, 1, 4, false});    // depthwise, no bias
  check_gradients({2, 3, 6, 5, 5, 3, 3, 1, 1, 3});           // channel multiplier 2: grouped sgemm
  check_gradients({2, 3, 4, 5, 6, 3, 3, 1, 1, 1, false});    // no bias
  check_gradients({2, 3, 20, 9, 7, 3, 3, 1, 1, 1});          // two channel blocks, stride 1
  check_gradients({2, 3, 20, 9, 7, 3, 3, 2, 1, 1});          // two channel blocks, stride 2
  check_gradients({1, 2, 18, 8, 9, 3, 3, 1, 1, 1, false});   // one sample: one range, pixel chunks
  check_gradients({9, 2, 3, 4, 5, 3, 3, 1, 1, 1});           // 9 samples on 2 threads: 2 ranges
  check_gradients({2, 16, 16, 6, 6, 3, 3, 1, 1, 1});         // Winograd / Winograd / Winograd
  check_gradients({2, 16, 32, 5, 7, 3, 3, 1, 1, 1, false});  // Winograd, odd plane, 2 blocks
}

TEST_CASE("conv2d computes gradients only for inputs that require them") {
  for (int64_t groups : {1, 4}) {
    CAPTURE(groups);
    const Config c{2, 4, 4, 5, 5, 3, 3, 1, 1, groups};
    Generator gen(5);
    {  // only the input
      Inputs in = make_inputs(c, 1);
      in.x.set_requires_grad(true);
      Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
      out.backward(Tensor::randn(out.shape(), gen));
      CHECK(in.x.grad().defined());
      CHECK_FALSE(in.w.grad().defined());
      CHECK_FALSE(in.b.grad().defined());
    }
    {  // only weight and bias
      Inputs in = make_inputs(c, 1);
      in.w.set_requires_grad(true);
      in.b.set_requires_grad(true);
      Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
      out.backward(Tensor::randn(out.shape(), gen));
      CHECK_FALSE(in.x.grad().defined());
      CHECK(in.w.grad().defined());
      CHECK(in.b.grad().defined());
    }
    {  // no graph under NoGradGuard
      Inputs in = make_inputs(c, 1);
      in.x.set_requires_grad(true);
      NoGradGuard guard;
      Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
      CHECK_FALSE(out.requires_grad());
      CHECK(out.grad_fn() == nullptr);
    }
  }
}

TEST_CASE("conv2d backward accumulates into existing gradients") {
  const Config configs[] = {{2, 4, 4, 6, 5, 3, 3, 2, 1, 1},
                            {2, 4, 4, 6, 5, 3, 3, 2, 1, 2},
                            {2, 4, 4, 6, 5, 3, 3, 2, 1, 4},
                            {2, 16, 16, 6, 5, 3, 3, 1, 1, 1}};  // Winograd d_input adds
  for (const Config& c : configs) {
    INFO(describe(c));
    Inputs in = make_inputs(c, 9);
    for (Tensor* t : {&in.x, &in.w, &in.b}) {
      t->set_requires_grad(true);
      t->set_grad(Tensor::ones(t->shape()));
    }
    Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
    Generator gen(4);
    const Tensor d_out = Tensor::randn(out.shape(), gen);
    out.backward(d_out);
    const test::ReferenceGrads r =
        test::reference_conv_backward(geometry_of(c), in.x.data(), in.w.data(), d_out.data());
    for (auto [got, want] : {std::pair{&in.x, &r.dx}, {&in.w, &r.dw}, {&in.b, &r.db}}) {
      std::vector<double> expected = *want;
      for (double& v : expected) v += 1.0;
      CHECK(rel_diff(got->grad(), expected) < 1e-5);
    }
  }
}

/// Output, then d_input and d_weight where asked, of one forward + backward
/// of config c on `threads` threads, concatenated.
static std::vector<float> run_with_threads(const Config& c, int threads, bool with_dx,
                                           bool with_dw) {
  const int saved = num_threads();
  set_num_threads(threads);
  Inputs in = make_inputs(c, 2);
  in.x.set_requires_grad(true);
  in.w.set_requires_grad(true);
  Tensor out = ops::conv2d(in.x, in.w, in.b, options_of(c));
  Generator gen(8);
  out.backward(Tensor::randn(out.shape(), gen));
  set_num_threads(saved);
  std::vector<float> all(out.span().begin(), out.span().end());
  if (with_dx) all.insert(all.end(), in.x.grad().span().begin(), in.x.grad().span().end());
  if (with_dw) all.insert(all.end(), in.w.grad().span().begin(), in.w.grad().span().end());
  return all;
}

TEST_CASE("depthwise conv2d is bit-identical for 1 and 2 threads") {
  const Config c{4, 8, 8, 12, 10, 3, 3, 2, 1, 8};
  CHECK(run_with_threads(c, 1, true, true) == run_with_threads(c, 2, true, true));
}

// A build without AVX2 + FMA (-Dnative=false) has no direct kernels: its
// im2col + sgemm path splits the work differently per thread count.
const bool kNoDirectConv =
    test::skip_unless(ops::direct::supports(test::conv_geometry(4, 5, 20, 14, 14, 3, 3, 1, 1)),
                      "built without AVX2 + FMA: no direct conv kernels to test");

TEST_CASE("dense direct conv2d output and d_input are bit-identical for 1 and 2 threads" *
          doctest::skip(kNoDirectConv)) {
  // N = 4 splits samples over threads; N = 1 splits channel blocks and
  // pixels. The direct kernels' output and d_input (stride 1) never depend
  // on the split; d_weight is summed per sample range (ranges added in
  // order), so it is compared when there is one range.
  for (const Config& c :
       {Config{4, 5, 20, 14, 14, 3, 3, 1, 1, 1}, Config{1, 5, 20, 14, 14, 3, 3, 1, 1, 1},
        Config{4, 5, 20, 14, 14, 3, 3, 2, 1, 1}}) {
    const bool with_dx = c.stride == 1, with_dw = c.N == 1;
    CHECK_MESSAGE(
        run_with_threads(c, 1, with_dx, with_dw) == run_with_threads(c, 2, with_dx, with_dw),
        describe(c));
  }
}

TEST_CASE("conv2d rejects inconsistent shapes with a clear message") {
  Generator gen(1);
  const Tensor x = Tensor::randn({2, 4, 5, 5}, gen);
  auto conv = [&](const Shape& w, const Shape& b, Conv2dOptions o) {
    return ops::conv2d(x, Tensor::zeros(w), b.empty() ? Tensor() : Tensor::zeros(b), o);
  };
  CHECK_THROWS_AS(conv({3, 3, 3, 3}, {}, {}), UsageError);             // C_in mismatch
  CHECK_THROWS_AS(conv({3, 4, 3, 3}, {4}, {}), UsageError);            // bias size
  CHECK_THROWS_AS(conv({3, 4, 3, 3}, {3, 1}, {}), UsageError);         // bias rank
  CHECK_THROWS_AS(conv({3, 2, 3, 3}, {}, {.groups = 2}), UsageError);  // C_out % groups
  CHECK_THROWS_AS(conv({4, 1, 3, 3}, {}, {.groups = 3}), UsageError);  // C_in % groups
  CHECK_THROWS_AS(conv({4, 4, 7, 7}, {}, {}), UsageError);             // kernel too big
  CHECK_THROWS_AS(conv({4, 4, 3, 3}, {}, {.stride = 0}), UsageError);
  CHECK_THROWS_AS(conv({4, 4, 3, 3}, {}, {.padding = -1}), UsageError);
  CHECK_THROWS_AS(ops::conv2d(Tensor::zeros({4, 5, 5}), Tensor::zeros({4, 4, 3, 3})), UsageError);
  CHECK_THROWS_AS(ops::conv2d(x, Tensor::zeros({4, 4, 3})), UsageError);
  try {
    conv({3, 3, 3, 3}, {}, {});
    FAIL("no exception");
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("[2, 4, 5, 5]") != std::string::npos);
    CHECK(msg.find("[3, 3, 3, 3]") != std::string::npos);
  }
}
