// Conv2d layer: known-value forward, agreement with a direct loop oracle for
// strided, padded, grouped and depthwise convs, initialisation, gradients,
// state round trip and a pruned weight staying zero.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include "core/error.h"
#include "layers/conv2d.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
/// Direct 7-loop cross-correlation: x [N, C, H, W], w [O, C / g, k, k] -> [N, O, Ho, Wo].
Tensor conv_oracle(const Tensor& x, const Tensor& w, const Tensor& b, int64_t stride, int64_t pad,
                   int64_t groups) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = C / groups, Og = O / groups, k = w.size(2);
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  Tensor out = Tensor::zeros({N, O, Ho, Wo});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < Ho; ++i)
        for (int64_t j = 0; j < Wo; ++j) {
          double acc = b.defined() ? b.at(o) : 0.0;
          const int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t u = 0; u < k; ++u)
              for (int64_t v = 0; v < k; ++v) {
                const int64_t r = i * stride - pad + u, s = j * stride - pad + v;
                if (r < 0 || r >= H || s < 0 || s >= W) continue;
                acc += static_cast<double>(x.at(((n * C + g * Cg + c) * H + r) * W + s)) *
                       w.at(((o * Cg + c) * k + u) * k + v);
              }
          out.data()[((n * O + o) * Ho + i) * Wo + j] = static_cast<float>(acc);
        }
  return out;
}
}  // namespace

TEST_CASE("Conv2d forward matches a hand computation") {
  Conv2d conv(1, 1, 2);
  conv.weight().copy_from(Tensor::from_data({1, 1, 2, 2}, {1.f, 2.f, 3.f, 4.f}));
  conv.bias().fill_(0.5f);
  const Tensor x = Tensor::from_data({1, 1, 3, 3}, {1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f});
  const Tensor y = conv.forward(x);
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  // 1*1 + 2*2 + 3*4 + 4*5 = 37, then 47, 67, 77; plus the bias.
  CHECK(y.at(0) == doctest::Approx(37.5f));
  CHECK(y.at(1) == doctest::Approx(47.5f));
  CHECK(y.at(2) == doctest::Approx(67.5f));
  CHECK(y.at(3) == doctest::Approx(77.5f));
}

TEST_CASE("Conv2d agrees with a direct loop for every configuration") {
  struct Case {
    int64_t in, out, k, stride, pad, groups;
    Bias bias;
  };
  const Case cases[] = {{3, 4, 3, 1, 1, 1, Bias::kYes}, {3, 4, 3, 2, 1, 1, Bias::kNo},
                        {4, 6, 3, 1, 0, 2, Bias::kYes}, {5, 5, 3, 2, 1, 5, Bias::kNo},
                        {6, 6, 3, 1, 1, 6, Bias::kYes}, {4, 8, 1, 2, 0, 1, Bias::kNo}};
  for (const Case& c : cases) {
    Generator gen(11);
    Conv2d conv(c.in, c.out, c.k, {.stride = c.stride, .padding = c.pad, .groups = c.groups},
                c.bias, gen);
    const Tensor x = testing::randn({2, c.in, 7, 6}, 12);
    const Tensor y = conv.forward(x);
    const Tensor expected = conv_oracle(x, conv.weight(), conv.bias(), c.stride, c.pad, c.groups);
    INFO("in " << c.in << " out " << c.out << " k " << c.k << " stride " << c.stride << " pad "
               << c.pad << " groups " << c.groups);
    REQUIRE(y.shape() == expected.shape());
    CHECK(testing::max_abs_diff(y, expected) < 1e-4f);
  }
}

TEST_CASE("Conv2d registers parameters with PyTorch shapes and init") {
  Generator gen(3);
  Conv2d conv(8, 16, 3, {.stride = 1, .padding = 1, .groups = 2}, Bias::kYes, gen);
  CHECK(conv.weight().shape() == Shape{16, 4, 3, 3});
  CHECK(conv.bias().shape() == Shape{16});
  CHECK(conv.prunable_parameter_names() == std::vector<std::string>{"weight"});
  CHECK(conv.num_parameters() == 16 * 4 * 9 + 16);
  // fan_in = 4 * 9 = 36: U(-1/6, 1/6) for weight and bias.
  float max_w = 0.f, max_b = 0.f;
  for (float v : conv.weight().span()) max_w = std::max(max_w, std::abs(v));
  for (float v : conv.bias().span()) max_b = std::max(max_b, std::abs(v));
  CHECK(max_w <= 1.f / 6.f);
  CHECK(max_w > 0.95f / 6.f);
  CHECK(max_b <= 1.f / 6.f);

  Conv2d no_bias(3, 4, 3, {}, Bias::kNo);
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK_FALSE(no_bias.bias().defined());
  CHECK_THROWS_AS(Conv2d(3, 4, 3, {.groups = 2}), UsageError);
  CHECK_THROWS_AS(Conv2d(4, 4, 3, {.stride = 0}), UsageError);
}

TEST_CASE("Conv2d gradients: dense, strided grouped, depthwise") {
  Generator gen(4);
  Conv2d dense(3, 4, 3, {.stride = 1, .padding = 1}, Bias::kYes, gen);
  testing::check_module_gradients(dense, testing::randn({2, 3, 5, 5}, 5));
  Conv2d grouped(4, 6, 3, {.stride = 2, .padding = 1, .groups = 2}, Bias::kYes, gen);
  testing::check_module_gradients(grouped, testing::randn({2, 4, 6, 5}, 6));
  Conv2d depthwise(4, 4, 3, {.stride = 2, .padding = 1, .groups = 4}, Bias::kNo, gen);
  testing::check_module_gradients(depthwise, testing::randn({2, 4, 7, 7}, 7));
}

TEST_CASE("Conv2d state round trip") {
  testing::check_state_round_trip(
      [](uint64_t seed) {
        Generator gen(seed);
        return std::make_unique<Conv2d>(3, 4, 3, ops::Conv2dOptions{.padding = 1}, Bias::kYes, gen);
      },
      testing::randn({2, 3, 5, 5}, 8));
}

TEST_CASE("Conv2d: a pruned weight stays zero (dense and depthwise)") {
  Generator gen(9);
  Conv2d dense(3, 4, 3, {.padding = 1}, Bias::kYes, gen);
  testing::check_pruned_weight_stays_zero(dense, "weight", testing::randn({2, 3, 5, 5}, 10));
  Conv2d depthwise(4, 4, 3, {.padding = 1, .groups = 4}, Bias::kNo, gen);
  testing::check_pruned_weight_stays_zero(depthwise, "weight", testing::randn({2, 4, 5, 5}, 11));
}

TEST_CASE("Conv2d inference picks the sparse kernels by density and geometry") {
  // A mask keeping exactly `keep` of the weight's entries (every other one first).
  auto masked_to = [](Conv2d& conv, double density) {
    const Tensor w = conv.weight();
    Tensor mask = Tensor::zeros(w.shape());
    const auto keep = static_cast<int64_t>(density * static_cast<double>(w.numel()) + 0.5);
    for (int64_t i = 0; i < keep; ++i) mask.data()[i * w.numel() / keep] = 1.f;
    conv.set_mask("weight", mask);
  };
  Conv2d conv3(16, 16, 3, {.padding = 1}, Bias::kNo);
  Conv2d conv3s2(16, 32, 3, {.stride = 2, .padding = 1}, Bias::kNo);
  Conv2d pw(64, 64, 1, {}, Bias::kNo);
  const Shape big{2, 16, 28, 28}, pw_small{2, 64, 4, 4}, pw_big{2, 64, 14, 14};
  CHECK(conv3s2.output_shape(big) == Shape{2, 32, 14, 14});
  // Between the stride-1 crossover (0.33) and the stride-2 one (0.4).
  masked_to(conv3, 0.36), masked_to(conv3s2, 0.36);
  CHECK_FALSE(conv3.runs_sparse(big));
  CHECK(conv3s2.runs_sparse(big));
  masked_to(conv3, 0.3);
  CHECK(conv3.runs_sparse(big));
  // Pointwise: 0.25 is sparse on a 14x14 plane, dense on 4x4 (crossover 0.2).
  masked_to(pw, 0.25);
  CHECK(pw.runs_sparse(pw_big));
  CHECK_FALSE(pw.runs_sparse(pw_small));
  masked_to(pw, 0.15);
  CHECK(pw.runs_sparse(pw_small));
  // One sample: a 3x3 at 0.5 runs sparse (the dense side would be the direct
  // kernel, not Winograd), two samples dense.
  masked_to(conv3, 0.5);
  CHECK(conv3.runs_sparse({1, 16, 28, 28}));
  CHECK_FALSE(conv3.runs_sparse({2, 16, 28, 28}));
  Conv2d depthwise(16, 16, 3, {.padding = 1, .groups = 16}, Bias::kNo);
  masked_to(depthwise, 0.1);
  CHECK_FALSE(depthwise.runs_sparse(big));  // groups > 1: dense kernels only
}
