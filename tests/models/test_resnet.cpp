// CIFAR ResNet: exact parameter counts, output shapes, PyTorch parameter
// names, block behaviour for both shortcut kinds, initialisation, gradients,
// state round trip, pruning, and "overfit one batch" with plain SGD.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/elementwise.h"
#include "core/ops/loss.h"
#include "core/ops/shortcut.h"
#include "models/resnet.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;
using spruce::models::BasicBlock;
using spruce::models::ResNet;
using spruce::models::ResNetOptions;

namespace {
std::unique_ptr<ResNet> resnet(int64_t depth, int64_t in_channels, char shortcut,
                               uint64_t seed = 0) {
  Generator gen(seed);
  return std::make_unique<ResNet>(
      ResNetOptions{
          .depth = depth, .in_channels = in_channels, .num_classes = 10, .shortcut = shortcut},
      gen);
}

std::vector<std::string> keys(const NamedTensors& named) {
  std::vector<std::string> out;
  for (auto& [k, t] : named) out.push_back(k);
  return out;
}

double mean_square(const Tensor& t) {
  double s = 0.0;
  for (float v : t.span()) s += static_cast<double>(v) * v;
  return s / static_cast<double>(t.numel());
}
}  // namespace

TEST_CASE("ResNet parameter counts") {
  // ResNet-20, option B, 3 channels, 10 classes:
  //   conv1 16*3*9 = 432, bn1 32
  //   layer1: 3 x (2 * 16*16*9 + 2 * 32)                       = 14,016
  //   layer2: 32*16*9 + 32*32*9 + 128 + shortcut (32*16 + 64)   = 14,528
  //           + 2 x (2 * 32*32*9 + 128)                        = 37,120
  //   layer3: 64*32*9 + 64*64*9 + 256 + shortcut (64*32 + 128) = 57,728
  //           + 2 x (2 * 64*64*9 + 256)                        = 147,968
  //   fc 64*10 + 10 = 650                                total 272,474
  // Option A drops the shortcuts' 512 + 64 + 2048 + 128 = 2,752: 269,722.
  // One input channel saves 16*2*9 = 288 conv1 weights.
  CHECK(resnet(20, 3, 'B')->num_parameters() == 272474);
  CHECK(resnet(20, 3, 'A')->num_parameters() == 269722);
  CHECK(resnet(20, 1, 'B')->num_parameters() == 272186);
  CHECK(resnet(20, 1, 'A')->num_parameters() == 269434);
  // Each extra block per stage adds 4,672 + 18,560 + 73,984 = 97,216.
  CHECK(resnet(32, 3, 'B')->num_parameters() == 272474 + 2 * 97216);  // 466,906
  CHECK(resnet(32, 3, 'A')->num_parameters() == 464154);
  CHECK(resnet(56, 3, 'A')->num_parameters() == 853018);
}

TEST_CASE("ResNet output shapes for MNIST- and CIFAR-sized inputs") {
  NoGradGuard no_grad;
  auto mnist = resnet(20, 1, 'B');
  CHECK(mnist->forward(testing::randn({2, 1, 28, 28}, 1)).shape() == Shape{2, 10});
  auto cifar = resnet(20, 3, 'A');
  CHECK(cifar->forward(testing::randn({3, 3, 32, 32}, 2)).shape() == Shape{3, 10});
  Generator gen(0);
  ResNet seven({.depth = 20, .in_channels = 3, .num_classes = 7}, gen);
  CHECK(seven.forward(testing::randn({1, 3, 9, 9}, 3)).shape() == Shape{1, 7});
}

TEST_CASE("ResNet parameter and state names match PyTorch") {
  auto net = resnet(20, 3, 'B');
  const std::vector<std::string> params = keys(net->named_parameters());
  CHECK(params.size() == 65);  // 1 + 2 + 9 blocks * 6 + 2 shortcuts * 3 + 2
  const std::vector<std::string> state = keys(net->state_dict());
  CHECK(state.size() == 128);  // 65 + 21 batch norms * 3 buffers
  const std::vector<std::string> head(state.begin(), state.begin() + 12);
  CHECK(head == std::vector<std::string>{
                    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                    "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
                    "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
                    "layer1.0.bn1.num_batches_tracked"});
  CHECK(state[state.size() - 2] == "fc.weight");
  CHECK(state.back() == "fc.bias");
  CHECK(net->parameter("layer2.0.shortcut.0.weight").shape() == Shape{32, 16, 1, 1});
  CHECK(net->parameter("layer2.0.shortcut.1.weight").shape() == Shape{32});
  CHECK(net->buffer("layer3.0.shortcut.1.running_var").shape() == Shape{64});
  CHECK(net->parameter("layer3.2.conv2.weight").shape() == Shape{64, 64, 3, 3});
  CHECK(net->parameter("layer2.1.conv1.weight").shape() == Shape{32, 32, 3, 3});
  CHECK(net->parameter("fc.weight").shape() == Shape{10, 64});
  CHECK_THROWS_AS(net->parameter("layer1.0.shortcut.0.weight"), UsageError);  // identity there

  auto a = resnet(20, 3, 'A');
  CHECK(a->named_parameters().size() == 59);
  CHECK(a->state_dict().size() == 116);
  CHECK_THROWS_AS(a->parameter("layer2.0.shortcut.0.weight"), UsageError);
}

TEST_CASE("the default prunable set is the 18 in-block convs") {
  auto net = resnet(20, 3, 'B');
  const std::vector<std::string> names = net->prunable_parameter_names({"layer*.*.conv*.weight"});
  REQUIRE(names.size() == 18);
  CHECK(names.front() == "layer1.0.conv1.weight");
  CHECK(names[1] == "layer1.0.conv2.weight");
  CHECK(names.back() == "layer3.2.conv2.weight");
  // All prunable weights: conv1 + 18 + 2 shortcut convs + fc.
  CHECK(net->prunable_parameter_names().size() == 22);
}

TEST_CASE("BasicBlock with zero convs is relu(shortcut(x))") {
  NoGradGuard no_grad;
  const Tensor x = testing::randn({2, 16, 6, 6}, 4);
  for (char kind : {'A', 'B'}) {
    auto net = resnet(20, 3, kind);
    net->eval();
    for (const char* name : {"layer1.1.conv1.weight", "layer1.1.conv2.weight",
                             "layer2.0.conv1.weight", "layer2.0.conv2.weight"})
      net->parameter(name).zero_();
    // Identity shortcut.
    const Tensor y1 = net->submodule("layer1.1").forward(x);
    CHECK(testing::max_abs_diff(y1, ops::relu(x)) < 1e-6f);
    // Downsampling shortcut: A pads channels, B projects (1x1 conv + BN).
    const Tensor y2 = net->submodule("layer2.0").forward(x);
    REQUIRE(y2.shape() == Shape{2, 32, 3, 3});
    const Tensor expected = kind == 'A' ? ops::relu(ops::shortcut_pad(x, 32))
                                        : ops::relu(net->submodule("layer2.0.shortcut").forward(x));
    CHECK(testing::max_abs_diff(y2, expected) < 1e-5f);
  }
}

TEST_CASE("ResNet initialisation follows the reference and is seeded") {
  auto net = resnet(20, 3, 'B', 5);
  // Convs: normal(0, sqrt(2 / (k * k * out))); BN weight 1, bias 0.
  CHECK(mean_square(net->parameter("layer3.1.conv2.weight")) ==
        doctest::Approx(2.0 / 576.0).epsilon(0.05));
  CHECK(mean_square(net->parameter("layer2.1.conv1.weight")) ==
        doctest::Approx(2.0 / 288.0).epsilon(0.1));
  CHECK(mean_square(net->parameter("layer3.0.shortcut.0.weight")) ==
        doctest::Approx(2.0 / 64.0).epsilon(0.1));
  CHECK(net->parameter("layer1.2.bn2.weight").at(7) == 1.f);
  CHECK(net->parameter("layer1.2.bn2.bias").at(7) == 0.f);
  // fc keeps PyTorch's Linear default: |w| <= 1/8.
  float max_fc = 0.f;
  for (float v : net->parameter("fc.weight").span()) max_fc = std::max(max_fc, std::abs(v));
  CHECK(max_fc <= 0.125f);

  auto same = resnet(20, 3, 'B', 5), other = resnet(20, 3, 'B', 6);
  const NamedTensors s0 = net->state_dict(), s1 = same->state_dict(), s2 = other->state_dict();
  bool all_equal = true, any_diff = false;
  for (size_t i = 0; i < s0.size(); ++i) {
    all_equal = all_equal && testing::max_abs_diff(s0[i].second, s1[i].second) == 0.f;
    any_diff = any_diff || testing::max_abs_diff(s0[i].second, s2[i].second) > 0.f;
  }
  CHECK(all_equal);
  CHECK(any_diff);
}

TEST_CASE("ResNet rejects invalid options") {
  Generator gen(0);
  CHECK_THROWS_AS(ResNet({.depth = 21}, gen), UsageError);
  CHECK_THROWS_AS(ResNet({.depth = 2}, gen), UsageError);
  CHECK_THROWS_AS(ResNet({.shortcut = 'C'}, gen), UsageError);
  CHECK_THROWS_AS(ResNet({.in_channels = 0}, gen), UsageError);
  CHECK_THROWS_AS(BasicBlock(16, 16, 1, 'C', gen), UsageError);
  CHECK_THROWS_AS(BasicBlock(16, 33, 2, 'A', gen), UsageError);
}

TEST_CASE("BasicBlock gradients for the input and every parameter") {
  // Checked block by block, with every ReLU input kept far from its kink:
  // through a whole ReLU network a finite-difference step moves many units
  // across their kinks and the numeric derivative is unreliable.
  Generator gen(7);
  BasicBlock identity(8, 8, 1, 'B', gen);
  BasicBlock pad(4, 8, 2, 'A', gen);
  BasicBlock projection(4, 8, 2, 'B', gen);
  for (Module* block : {static_cast<Module*>(&identity), static_cast<Module*>(&pad),
                        static_cast<Module*>(&projection)})
    testing::keep_relus_off_kinks(*block);
  testing::check_module_gradients(identity, testing::rand_signed({2, 8, 5, 5}, 8));
  testing::check_module_gradients(pad, testing::rand_signed({2, 4, 6, 5}, 9));
  testing::check_module_gradients(projection, testing::rand_signed({2, 4, 6, 5}, 10));
  projection.eval();
  testing::check_module_gradients(projection, testing::rand_signed({2, 4, 6, 5}, 11));
}

TEST_CASE("ResNet gradients for the classifier") {
  auto net = resnet(20, 1, 'B', 7);
  const Tensor x = testing::randn({4, 1, 6, 6}, 8);
  const GradCheckResult r = grad_check([&](const std::vector<Tensor>&) { return net->forward(x); },
                                       {net->parameter("fc.weight"), net->parameter("fc.bias")});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.checked > 70);
}

TEST_CASE("ResNet state round trip and a pruned weight stays zero") {
  const Tensor x = testing::randn({2, 3, 8, 8}, 9);
  testing::check_state_round_trip([](uint64_t seed) { return resnet(20, 3, 'B', seed); }, x);
  auto net = resnet(20, 3, 'A', 10);
  testing::check_pruned_weight_stays_zero(*net, "layer2.1.conv1.weight", x);
}

TEST_CASE("overfit one batch: ResNet-20 (A, 1 channel) memorises 32 random images") {
  const auto start = std::chrono::steady_clock::now();
  auto net = resnet(20, 1, 'A', 11);
  const Tensor x = testing::randn({32, 1, 8, 8}, 12);
  Generator label_gen(13);
  std::vector<int32_t> labels(32);
  for (int32_t& y : labels) y = static_cast<int32_t>(label_gen.below(10));

  const float lr = 0.05f;
  const std::vector<Tensor> params = net->parameters();
  int64_t correct = 0;
  float first_loss = 0.f, loss_value = 0.f;
  int step = 0;
  for (; step < 300 && correct < 32; ++step) {
    net->zero_grad();
    const Tensor logits = net->forward(x);
    correct = ops::count_correct(logits, labels);
    const Tensor loss = ops::cross_entropy(logits, labels);
    loss_value = loss.item();
    if (step == 0) first_loss = loss_value;
    if (correct == 32) break;
    loss.backward();
    for (Tensor p : params) {  // plain SGD: w -= lr * grad
      float* w = p.data();
      const float* g = p.grad().data();
      for (int64_t i = 0; i < p.numel(); ++i) w[i] -= lr * g[i];
    }
  }
  MESSAGE(
      "overfit: " << step << " steps, loss " << first_loss << " -> " << loss_value << ", "
                  << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
                  << " s");
  CHECK(correct == 32);
  CHECK(loss_value < first_loss);
}
