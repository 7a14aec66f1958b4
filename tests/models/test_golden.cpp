// Golden tests against PyTorch: a ResNet basic block and a MobileNet
// depthwise-separable block, each followed by global average pooling and a
// linear classifier, start from the same weights as a PyTorch run and must
// reproduce its logits and loss, every parameter's gradient, and the whole
// state (weights, batch-norm running statistics) after three SGD steps:
// momentum with Nesterov and weight decay for the ResNet block, momentum with
// dampening and weight decay for the MobileNet block. Training mode, so batch
// norm uses batch statistics and updates its running ones.
//
// The fixtures (tests/models/golden/*.npz) were written once by
// tests/models/golden/make_fixtures.py with PyTorch 1.13; this test reads only
// them. Tolerances allow for float32 summation order (spruce's Winograd, direct
// and depthwise kernels sum in another order than oneDNN), nothing more: a
// wrong gradient or update rule is off by far more.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/io/npz.h"
#include "core/ops/loss.h"
#include "core/random.h"
#include "layers/global_avg_pool2d.h"
#include "layers/linear.h"
#include "layers/sequential.h"
#include "models/mobilenet_v1.h"
#include "models/resnet.h"
#include "optim/sgd.h"

using namespace spruce;

namespace {

const std::string kGoldenDir = SPRUCE_GOLDEN_DIR;

/// The fixture's arrays by name.
std::map<std::string, Tensor> load(const std::string& file) {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : io::read_npz(kGoldenDir + "/" + file)) out[name] = t;
  return out;
}

/// The entries "<prefix><key>", as a state_dict keyed by <key>.
optim::NamedTensors with_prefix(const std::map<std::string, Tensor>& f, const std::string& prefix) {
  optim::NamedTensors out;
  for (const auto& [name, t] : f)
    if (name.rfind(prefix, 0) == 0) out.emplace_back(name.substr(prefix.size()), t);
  return out;
}

/// |got - want| <= atol + rtol |want| for every element.
void check_close(const std::string& what, const Tensor& got, const Tensor& want, double rtol,
                 double atol) {
  CAPTURE(what);
  REQUIRE(got.shape() == want.shape());
  double worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    const double excess = std::abs(g - w) - (atol + rtol * std::abs(w));
    if (excess > worst) worst = excess, at = i;
  }
  CHECK_MESSAGE(at < 0, what << ": element " << at << " is " << (at < 0 ? 0 : got.data()[at])
                             << ", PyTorch " << (at < 0 ? 0 : want.data()[at]));
}

/// Loads the fixture into `net`, trains three steps with `sgd` and compares
/// every recorded value.
void check_against_fixture(Module& net, const std::string& file, const optim::SgdOptions& sgd) {
  const std::map<std::string, Tensor> f = load(file);
  net.load_state_dict(with_prefix(f, "init/"));  // strict: every key of both sides
  net.train();
  const Tensor x = f.at("x");
  std::vector<int32_t> labels;
  for (const float v : f.at("labels").span()) labels.push_back(static_cast<int32_t>(v));

  optim::Sgd opt(net.named_parameters(), sgd);
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    const std::string s = "step" + std::to_string(step) + "/";
    opt.zero_grad();
    const Tensor logits = net.forward(x);
    const Tensor loss = ops::cross_entropy(logits, labels);
    check_close(s + "logits", logits, f.at(s + "logits"), 1e-4, 1e-5);
    check_close(s + "loss", loss, f.at(s + "loss"), 1e-5, 1e-6);
    loss.backward();
    if (step == 0) {
      const optim::NamedTensors params = net.named_parameters();
      CHECK(params.size() == with_prefix(f, "grad/").size());
      for (const auto& [name, p] : params)
        check_close("grad " + name, p.grad(), f.at("grad/" + name), 1e-4, 1e-6);
    }
    opt.step();
  }
  const optim::NamedTensors state = net.state_dict();
  CHECK(state.size() == with_prefix(f, "final/").size());
  for (const auto& [name, t] : state)
    check_close("final " + name, t, f.at("final/" + name), 1e-4, 1e-6);
}

}  // namespace

TEST_CASE("ResNet basic block: forward, loss, gradients and 3 SGD steps (Nesterov) match PyTorch") {
  Generator gen(1);  // any seed: the fixture's weights replace these
  Sequential net;
  net.push_back(std::make_unique<models::BasicBlock>(8, 16, 2, 'B', gen));
  net.emplace_back<GlobalAvgPool2d>();
  net.push_back(std::make_unique<Linear>(16, 3, Bias::kYes, gen));
  check_against_fixture(net, "resnet_block.npz",
                        {.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 5e-4});
}

TEST_CASE("MobileNet block: forward, loss, gradients and 3 SGD steps (dampening) match PyTorch") {
  Generator gen(1);
  Sequential net;
  net.push_back(std::make_unique<models::DepthwiseSeparableBlock>(8, 16, 1, gen));
  net.emplace_back<GlobalAvgPool2d>();
  net.push_back(std::make_unique<Linear>(16, 3, Bias::kYes, gen));
  check_against_fixture(net, "mobilenet_block.npz",
                        {.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3});
}
