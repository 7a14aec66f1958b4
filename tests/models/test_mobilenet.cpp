// MobileNetV1: exact parameter counts, output and feature-map shapes,
// parameter names, width multiplier, gradients, state round trip, pruning.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "models/mobilenet_v1.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;
using spruce::models::MobileNetV1;
using spruce::models::MobileNetV1Options;

namespace {
std::unique_ptr<MobileNetV1> mobilenet(float width, int64_t in_channels = 3, uint64_t seed = 0) {
  Generator gen(seed);
  return std::make_unique<MobileNetV1>(
      MobileNetV1Options{.in_channels = in_channels, .num_classes = 10, .width = width}, gen);
}
}  // namespace

TEST_CASE("MobileNetV1 parameter counts") {
  // Width 1.0, 3 channels, 10 classes. conv1 32*3*9 = 864, bn1 64. A block
  // in -> out has dw in*9, bn 2 in, pw in*out, bn 2 out:
  //   32->64 2,528; 64->128 9,152; 128->128 18,048; 128->256 34,688;
  //   256->256 68,864; 256->512 134,912; 512->512 268,800 x5 = 1,344,000;
  //   512->1024 531,968; 1024->1024 1,061,888
  // linear 1024*10 + 10 = 10,250.                       total 3,217,226
  CHECK(mobilenet(1.f)->num_parameters() == 3217226);
  // One input channel: conv1 has 32*1*9, 576 fewer weights.
  CHECK(mobilenet(1.f, 1)->num_parameters() == 3216650);
  // Width 0.25: channels 8, 16, 32, 32, 64, 64, 128 (x6), 256, 256.
  //   conv1 216 + bn1 16; blocks 248, 752, 1,440, 2,528, 4,928, 9,152,
  //   18,048 x5, 34,688, 68,864; linear 2,570.            total 215,642
  CHECK(mobilenet(0.25f)->num_parameters() == 215642);
  CHECK(MobileNetV1::scaled_channels(32, 0.25f) == 8);
  CHECK(MobileNetV1::scaled_channels(32, 0.1f) == 8);  // never below 8
  CHECK(MobileNetV1::scaled_channels(1024, 0.75f) == 768);
}

TEST_CASE("MobileNetV1 output shapes and the final 2x2 feature map") {
  NoGradGuard no_grad;
  auto net = mobilenet(0.25f, 3);
  CHECK(net->forward(testing::randn({2, 3, 32, 32}, 1)).shape() == Shape{2, 10});
  Module& blocks = net->submodule("layers");
  CHECK(blocks.forward(testing::randn({1, 8, 32, 32}, 2)).shape() == Shape{1, 256, 2, 2});
  CHECK(blocks.forward(testing::randn({1, 8, 28, 28}, 3)).shape() == Shape{1, 256, 2, 2});
  auto mnist = mobilenet(0.5f, 1);
  CHECK(mnist->forward(testing::randn({2, 1, 28, 28}, 4)).shape() == Shape{2, 10});
  auto full = mobilenet(1.f, 3);
  CHECK(full->forward(testing::randn({1, 3, 32, 32}, 5)).shape() == Shape{1, 10});
}

TEST_CASE("MobileNetV1 parameter names and shapes") {
  auto net = mobilenet(1.f);
  CHECK(net->named_parameters().size() == 83);  // conv1 + bn1 (2) + 13 * 6 + linear (2)
  CHECK(net->state_dict().size() == 164);       // + 27 batch norms * 3 buffers
  CHECK(net->parameter("conv1.weight").shape() == Shape{32, 3, 3, 3});
  CHECK(net->parameter("layers.0.conv1.weight").shape() == Shape{32, 1, 3, 3});   // depthwise
  CHECK(net->parameter("layers.0.conv2.weight").shape() == Shape{64, 32, 1, 1});  // pointwise
  CHECK(net->parameter("layers.11.conv2.weight").shape() == Shape{1024, 512, 1, 1});
  CHECK(net->buffer("layers.12.bn2.running_var").shape() == Shape{1024});
  CHECK(net->parameter("linear.weight").shape() == Shape{10, 1024});
  CHECK(net->parameter("linear.bias").shape() == Shape{10});
  CHECK_THROWS_AS(net->parameter("layers.0.conv1.bias"),
                  UsageError);  // convs before BN have no bias
  const NamedTensors state = net->state_dict();
  CHECK(state[0].first == "conv1.weight");
  CHECK(state[6].first == "layers.0.conv1.weight");
  CHECK(state.back().first == "linear.bias");

  auto quarter = mobilenet(0.25f);
  CHECK(quarter->parameter("conv1.weight").shape() == Shape{8, 3, 3, 3});
  CHECK(quarter->parameter("linear.weight").shape() == Shape{10, 256});

  // Default prunable set: every conv and the classifier (28 weights).
  CHECK(net->prunable_parameter_names({"conv1.weight", "layers.*.conv*.weight", "linear.weight"})
            .size() == 28);
}

TEST_CASE("MobileNetV1 rejects invalid options") {
  Generator gen(0);
  CHECK_THROWS_AS(MobileNetV1({.width = 0.f}, gen), UsageError);
  CHECK_THROWS_AS(MobileNetV1({.num_classes = 0}, gen), UsageError);
  CHECK_THROWS_AS(MobileNetV1({.first_stride = 3}, gen), UsageError);
}

TEST_CASE("DepthwiseSeparableBlock gradients for the input and every parameter") {
  // Checked block by block with ReLU inputs kept off their kinks (see test_resnet.cpp).
  Generator gen(6);
  models::DepthwiseSeparableBlock block(4, 6, 2, gen);
  testing::keep_relus_off_kinks(block);
  testing::check_module_gradients(block, testing::rand_signed({2, 4, 6, 5}, 7));
  block.eval();
  testing::check_module_gradients(block, testing::rand_signed({2, 4, 6, 5}, 8));
}

TEST_CASE("MobileNetV1 gradients for the classifier") {
  auto net = mobilenet(0.25f, 1, 6);
  const Tensor x = testing::randn({4, 1, 6, 6}, 7);
  const GradCheckResult r =
      grad_check([&](const std::vector<Tensor>&) { return net->forward(x); },
                 {net->parameter("linear.weight"), net->parameter("linear.bias")});
  INFO(r.message);
  CHECK(r.ok);
  CHECK(r.checked > 70);
}

TEST_CASE("MobileNetV1 state round trip and a pruned depthwise weight stays zero") {
  const Tensor x = testing::randn({2, 3, 8, 8}, 8);
  testing::check_state_round_trip([](uint64_t seed) { return mobilenet(0.25f, 3, seed); }, x);
  auto net = mobilenet(0.25f, 3, 9);
  testing::check_pruned_weight_stays_zero(*net, "layers.3.conv1.weight", x);
}
