// recalibrate_batch_norm: on a conv-BN-ReLU-conv-BN model, after
// recalibration on fixed batches every running mean/var equals the mean over
// the batches of the per-channel batch mean / unbiased batch variance of that
// BN's input, computed here independently (the second BN's input through a
// hand-written training-mode normalisation of the first); old statistics are
// discarded; parameters, masks, momentum, the batch counter and training flags
// are unchanged; 0 batches does nothing.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "layers/batch_norm2d.h"
#include "layers/batch_norm_recalibration.h"
#include "layers/conv2d.h"
#include "layers/relu.h"
#include "layers/sequential.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;
using spruce::testing::randn;

namespace {

struct Model {
  Sequential seq;
  Conv2d* conv1;
  BatchNorm2d* bn1;
  Conv2d* conv2;
  BatchNorm2d* bn2;
  Model() {
    Generator gen(7);
    conv1 = &seq.emplace_back<Conv2d>(2, 3, 3, ops::Conv2dOptions{.padding = 1}, Bias::kYes, gen);
    bn1 = &seq.emplace_back<BatchNorm2d>(3, BatchNorm2dOptions{.momentum = 0.3f});
    seq.emplace_back<ReLU>();
    conv2 = &seq.emplace_back<Conv2d>(3, 2, 1, ops::Conv2dOptions{}, Bias::kYes, gen);
    bn2 = &seq.emplace_back<BatchNorm2d>(2);
    // Non-trivial affine parameters and stale running statistics.
    bn1->weight().copy_from(Tensor::from_data({3}, {1.5f, 0.5f, 2.f}));
    bn1->bias().copy_from(Tensor::from_data({3}, {0.2f, -0.1f, 0.4f}));
    bn1->running_mean().copy_from(Tensor::from_data({3}, {5.f, -5.f, 9.f}));
    bn1->running_var().copy_from(Tensor::from_data({3}, {30.f, 0.01f, 7.f}));
    bn2->running_mean().copy_from(Tensor::from_data({2}, {-3.f, 4.f}));
    bn2->num_batches_tracked().data()[0] = 11.f;
  }
};

// Batches of different sizes and shifted means, so an average of per-batch
// variances differs from the pooled variance and an exponential average from
// the cumulative one. x [N, 2, 4, 5].
std::vector<Tensor> make_batches() {
  std::vector<Tensor> batches;
  const int64_t sizes[3] = {4, 6, 5};
  for (int k = 0; k < 3; ++k) {
    Tensor x = randn({sizes[k], 2, 4, 5}, 100 + static_cast<uint64_t>(k));
    for (int64_t i = 0; i < x.numel(); ++i)
      x.data()[i] =
          x.data()[i] * (1.f + 0.5f * static_cast<float>(k)) + 2.f * static_cast<float>(k);
    batches.push_back(x);
  }
  return batches;
}

// Per-channel mean and unbiased variance of x [N, C, H, W], in double.
void channel_stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t n = x.shape()[0], c = x.shape()[1], hw = x.numel() / (n * c), count = n * hw;
  mean.assign(static_cast<size_t>(c), 0.0);
  var.assign(static_cast<size_t>(c), 0.0);
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j) s += x.at((i * c + ch) * hw + j);
    const double m = s / static_cast<double>(count);
    double ss = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; ++j)
        ss += (x.at((i * c + ch) * hw + j) - m) * (x.at((i * c + ch) * hw + j) - m);
    mean[static_cast<size_t>(ch)] = m;
    var[static_cast<size_t>(ch)] = ss / static_cast<double>(count - 1);
  }
}

// relu(gamma (x - mean_B) / sqrt(var_B + eps) + beta) with the biased batch variance.
Tensor train_bn_relu(const Tensor& x, const BatchNorm2d& bn) {
  std::vector<double> mean, unbiased;
  channel_stats(x, mean, unbiased);
  const int64_t n = x.shape()[0], c = x.shape()[1], hw = x.numel() / (n * c), count = n * hw;
  Tensor y = x.clone();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double biased = unbiased[static_cast<size_t>(ch)] * static_cast<double>(count - 1) /
                            static_cast<double>(count);
      const double scale = bn.weight().at(ch) / std::sqrt(biased + bn.options().eps);
      for (int64_t j = 0; j < hw; ++j) {
        float& v = y.data()[(i * c + ch) * hw + j];
        v = static_cast<float>(
            std::max(0.0, (v - mean[static_cast<size_t>(ch)]) * scale + bn.bias().at(ch)));
      }
    }
  return y;
}

// The expected statistics: for each BN, the mean over batches of its input's
// per-batch channel mean and unbiased variance.
struct Expected {
  std::vector<double> mean1, var1, mean2, var2;
};
Expected expected_stats(Model& m, const std::vector<Tensor>& batches) {
  NoGradGuard no_grad;
  Expected e;
  e.mean1.assign(3, 0.0), e.var1.assign(3, 0.0), e.mean2.assign(2, 0.0), e.var2.assign(2, 0.0);
  const double k = static_cast<double>(batches.size());
  for (const Tensor& x : batches) {
    std::vector<double> mean, var;
    const Tensor a1 = m.conv1->forward(x);
    channel_stats(a1, mean, var);
    for (size_t c = 0; c < 3; ++c) e.mean1[c] += mean[c] / k, e.var1[c] += var[c] / k;
    const Tensor a2 = m.conv2->forward(train_bn_relu(a1, *m.bn1));
    channel_stats(a2, mean, var);
    for (size_t c = 0; c < 2; ++c) e.mean2[c] += mean[c] / k, e.var2[c] += var[c] / k;
  }
  return e;
}

void check_close(const Tensor& got, const std::vector<double>& want) {
  REQUIRE(got.numel() == static_cast<int64_t>(want.size()));
  for (size_t c = 0; c < want.size(); ++c)
    CHECK(got.at(static_cast<int64_t>(c)) == doctest::Approx(want[c]).epsilon(1e-5));
}

}  // namespace

TEST_CASE("recalibrate_batch_norm sets the cumulative average of batch statistics") {
  Model m;
  const auto batches = make_batches();
  const Expected want = expected_stats(m, batches);
  NamedTensors params_before;
  for (const auto& [k, v] : m.seq.named_parameters()) params_before.emplace_back(k, v.clone());
  m.seq.set_mask("0.weight", Tensor::ones(m.conv1->weight().shape()));
  m.seq.eval();

  size_t next = 0;
  const int64_t n = recalibrate_batch_norm(m.seq, 3, [&] { return batches.at(next++); });
  CHECK(n == 2);
  CHECK(next == 3);
  check_close(m.bn1->running_mean(), want.mean1);
  check_close(m.bn1->running_var(), want.var1);
  check_close(m.bn2->running_mean(), want.mean2);
  check_close(m.bn2->running_var(), want.var2);

  // Nothing else changed.
  const NamedTensors params_after = m.seq.named_parameters();
  REQUIRE(params_after.size() == params_before.size());
  for (size_t i = 0; i < params_before.size(); ++i) {
    CHECK(params_after[i].first == params_before[i].first);
    CHECK(spruce::testing::max_abs_diff(params_after[i].second, params_before[i].second) == 0.f);
    CHECK_FALSE(params_after[i].second.grad().defined());
  }
  CHECK(m.seq.has_mask("0.weight"));
  CHECK(m.bn1->options().momentum == 0.3f);
  CHECK(m.bn2->options().momentum == 0.1f);
  CHECK(m.bn1->num_batches_tracked().item() == 0.f);
  CHECK(m.bn2->num_batches_tracked().item() == 11.f);
  CHECK_FALSE(m.seq.is_training());
  CHECK_FALSE(m.bn1->is_training());
  CHECK_FALSE(m.bn2->is_training());
}

TEST_CASE("recalibrate_batch_norm restores training mode, mixed modes included") {
  Model m;
  const auto batches = make_batches();
  m.seq.train();
  m.bn2->eval();  // a frozen BN inside a training model
  size_t next = 0;
  recalibrate_batch_norm(m.seq, 2, [&] { return batches.at(next++); });
  CHECK(m.seq.is_training());
  CHECK(m.bn1->is_training());
  CHECK(m.conv2->is_training());
  CHECK_FALSE(m.bn2->is_training());
}

TEST_CASE("recalibrate_batch_norm with 0 batches changes nothing; negative throws") {
  Model m;
  m.seq.eval();
  bool called = false;
  CHECK(recalibrate_batch_norm(m.seq, 0, [&] {
          called = true;
          return Tensor();
        }) == 0);
  CHECK_FALSE(called);
  CHECK(m.bn1->running_mean().at(0) == 5.f);
  CHECK(m.bn1->running_var().at(1) == 0.01f);
  CHECK_THROWS_AS(recalibrate_batch_norm(m.seq, -1, [] { return Tensor(); }), UsageError);
}

TEST_CASE("recalibrate_batch_norm restores momentum and modes when the batch source throws") {
  Model m;
  const auto batches = make_batches();
  m.seq.eval();
  int calls = 0;
  CHECK_THROWS_AS(recalibrate_batch_norm(m.seq, 3,
                                         [&] {
                                           if (calls++ == 1)
                                             throw std::runtime_error("no more data");
                                           return batches[0];
                                         }),
                  std::runtime_error);
  CHECK(m.bn1->options().momentum == 0.3f);
  CHECK(m.bn2->num_batches_tracked().item() == 11.f);
  CHECK_FALSE(m.bn1->is_training());
}
