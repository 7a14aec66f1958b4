// Eval-mode inference through the fused conv -> batch norm -> (add) -> ReLU
// path (layers/conv_batch_norm.h): ResNet (both shortcut kinds) and
// MobileNetV1 under NoGradGuard against the same models in eval mode with
// gradients on, which run the plain layer chain; with trained-looking batch
// norms, pruned weights, and batch norms changed between two evaluations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "core/autograd.h"
#include "models/mobilenet_v1.h"
#include "models/resnet.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/// Batch norms far from their initial identity: random gamma, beta, running
/// mean and variance, so that a fold that drops a term shows.
void randomize_batch_norms(Module& m, Generator& gen) {
  for (auto& [name, t] : m.named_parameters())
    if (t.dim() == 1) t.copy_from(Tensor::rand(t.shape(), gen, 0.5f, 1.5f));
  for (auto& [name, t] : m.named_buffers()) {
    if (ends_with(name, "running_mean")) t.copy_from(Tensor::randn(t.shape(), gen, 0.f, 0.2f));
    if (ends_with(name, "running_var")) t.copy_from(Tensor::rand(t.shape(), gen, 0.5f, 2.f));
  }
}

/// Masks every other weight of `param` and zeroes them.
void prune_half(Module& m, const std::string& param) {
  Tensor mask = Tensor::ones(m.parameter(param).shape());
  for (int64_t i = 0; i < mask.numel(); i += 2) mask.data()[i] = 0.f;
  m.set_mask(param, mask);
  m.apply_masks();
}

/// Largest |a - b| relative to the largest |b|.
double max_rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(double(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::abs(double(b.data()[i])));
  }
  return diff / scale;
}

/// Eval-mode output of m on x without a graph (the fused path) and with
/// gradients on (the plain chain): they agree to float rounding, and differ
/// in some bit, which shows the no-grad forward did take the fused path.
void check_fused_matches_plain(Module& m, const Tensor& x) {
  m.eval();
  Tensor fast;
  {
    NoGradGuard no_grad;
    fast = m.forward(x);
  }
  const Tensor plain = m.forward(x);
  CHECK(plain.requires_grad());
  CHECK(max_rel_diff(fast, plain) < 1e-5);
  CHECK_FALSE(std::equal(fast.data(), fast.data() + fast.numel(), plain.data()));
}

}  // namespace

TEST_CASE("ResNet eval inference: fused path equals the plain layer chain") {
  for (const char shortcut : {'A', 'B'}) {
    INFO("shortcut " << std::string(1, shortcut));
    Generator gen(shortcut);
    models::ResNet net({.depth = 20, .in_channels = 3, .num_classes = 10, .shortcut = shortcut},
                       gen);
    randomize_batch_norms(net, gen);
    prune_half(net, "layer2.1.conv1.weight");
    prune_half(net, "conv1.weight");
    const Tensor x = testing::randn({4, 3, 12, 12}, 1);
    check_fused_matches_plain(net, x);
    // Batch norms changed between evaluations: the fold is never stale.
    Tensor before;
    {
      NoGradGuard no_grad;
      before = net.forward(x);
    }
    net.parameter("layer3.2.bn2.weight").data()[0] *= 3.f;
    net.buffer("layer1.0.bn1.running_var").data()[1] *= 5.f;
    if (shortcut == 'B') net.buffer("layer2.0.shortcut.1.running_mean").data()[2] += 1.f;
    check_fused_matches_plain(net, x);
    NoGradGuard no_grad;
    CHECK(max_rel_diff(net.forward(x), before) > 1e-3);
  }
}

TEST_CASE("MobileNetV1 eval inference: fused path equals the plain layer chain") {
  Generator gen(3);
  models::MobileNetV1 net({.in_channels = 1, .num_classes = 10, .width = 0.25f}, gen);
  randomize_batch_norms(net, gen);
  prune_half(net, "layers.0.conv1.weight");  // depthwise
  prune_half(net, "layers.7.conv2.weight");  // pointwise on a 2x2 plane: the GEMM path
  check_fused_matches_plain(net, testing::randn({5, 1, 28, 28}, 2));
}

TEST_CASE("training mode and gradients are untouched by the fused path") {
  // In training mode the batch norms use batch statistics, with or without
  // a graph: the layers run one after the other, bit for bit the same.
  Generator gen(4);
  models::ResNet net({.depth = 8, .in_channels = 1, .num_classes = 10, .shortcut = 'B'}, gen);
  Generator twin_gen(4);
  models::ResNet twin({.depth = 8, .in_channels = 1, .num_classes = 10, .shortcut = 'B'}, twin_gen);
  const Tensor x = testing::randn({4, 1, 8, 8}, 5);
  Tensor no_graph;
  {
    NoGradGuard no_grad;
    no_graph = net.forward(x);
  }
  const Tensor with_graph = twin.forward(x);
  CHECK(std::equal(no_graph.data(), no_graph.data() + no_graph.numel(), with_graph.data()));
  CHECK(std::equal(net.buffer("layer1.0.bn1.running_mean").data(),
                   net.buffer("layer1.0.bn1.running_mean").data() + 16,
                   twin.buffer("layer1.0.bn1.running_mean").data()));
}
