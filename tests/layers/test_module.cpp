// Module: dotted names and their order, train/eval, zero_grad, state_dict
// save/load with its errors, and the pruning hooks (masks).
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/matmul.h"
#include "layers/module.h"
#include "layers/sequential.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
/// x [N, 2] -> [N, n]: a linear map with a prunable weight and a buffer.
class Leaf : public Module {
 public:
  explicit Leaf(int64_t n, float init = 1.f) {
    Tensor w = Tensor::empty({n, 2});
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = init + 0.25f * static_cast<float>(i);
    weight_ = register_parameter("weight", w, Prunable::kYes);
    bias_ = register_parameter("bias", Tensor::full({n}, 0.5f));
    register_buffer("stat", Tensor::zeros({n}));
  }
  Tensor forward(const Tensor& x) override {
    return ops::linear(x, masked_parameter("weight"), bias_);
  }
  // Exposes the protected hooks for the registration-error and masked-weight tests.
  using Module::masked_parameter;
  using Module::register_buffer;
  using Module::register_parameter;

 private:
  Tensor weight_, bias_;
};

/// "a" (Leaf 2), then "block" = Sequential{Leaf 2, Leaf 2}, then its own
/// "scale" [2, 2], a final linear map registered after the children.
class Net : public Module {
 public:
  explicit Net(float init = 1.f) {
    a_ = &register_module("a", std::make_unique<Leaf>(2, init));
    block_ = &register_module("block", std::make_unique<Sequential>());
    block_->emplace_back<Leaf>(2, init + 1.f);
    block_->emplace_back<Leaf>(2, init + 2.f);
    scale_ = register_parameter("scale", Tensor::from_data({2, 2}, {2.f, 0.f, 1.f, -1.f}));
  }
  Tensor forward(const Tensor& x) override {
    return ops::linear(block_->forward(a_->forward(x)), scale_);
  }

  Leaf* a_;
  Sequential* block_;
  Tensor scale_;
};

std::vector<std::string> keys(const NamedTensors& named) {
  std::vector<std::string> out;
  for (auto& [k, t] : named) out.push_back(k);
  return out;
}
}  // namespace

TEST_CASE("glob_match matches whole names with * and ?") {
  CHECK(glob_match("layer*.*.conv*.weight", "layer1.0.conv1.weight"));
  CHECK(glob_match("layer*.*.conv*.weight", "layer3.8.conv2.weight"));
  CHECK_FALSE(glob_match("layer*.*.conv*.weight", "layer2.0.shortcut.0.weight"));
  CHECK_FALSE(glob_match("layer*.*.conv*.weight", "conv1.weight"));
  CHECK_FALSE(glob_match("layer*.*.conv*.weight", "layer1.0.conv1.weight_mask"));
  CHECK(glob_match("*", ""));
  CHECK(glob_match("*", "anything.at.all"));
  CHECK(glob_match("fc.weight", "fc.weight"));
  CHECK_FALSE(glob_match("fc.weight", "fc.bias"));
  CHECK(glob_match("conv?.weight", "conv2.weight"));
  CHECK_FALSE(glob_match("conv?.weight", "conv12.weight"));
  CHECK(glob_match("a*b*c", "a-b-b-c"));
  CHECK_FALSE(glob_match("a*b*c", "a-b-b-"));
}

TEST_CASE("parameters and buffers have dotted names in PyTorch order") {
  Net net;
  // Own parameters first, then children depth first, as PyTorch's named_parameters.
  CHECK(keys(net.named_parameters()) == std::vector<std::string>{"scale", "a.weight", "a.bias",
                                                                 "block.0.weight", "block.0.bias",
                                                                 "block.1.weight", "block.1.bias"});
  CHECK(keys(net.named_buffers()) ==
        std::vector<std::string>{"a.stat", "block.0.stat", "block.1.stat"});
  CHECK(net.parameters().size() == 7);
  CHECK(net.num_parameters() == 4 + 3 * (4 + 2));
  const auto children = net.named_children();
  REQUIRE(children.size() == 2);
  CHECK(children[0].first == "a");
  CHECK(children[1].first == "block");
  // Handles alias the module's storage and are leaves that require grad.
  CHECK(net.parameter("block.1.weight").shares_storage_with(net.parameters()[5]));
  CHECK(net.parameter("a.weight").requires_grad());
  CHECK(net.parameter("block.0.bias").at(0) == 0.5f);
  CHECK(net.buffer("block.1.stat").numel() == 2);
  CHECK(&net.submodule("block.1") == &(*net.block_)[1]);
  CHECK_THROWS_WITH_AS(net.parameter("block.2.weight"), doctest::Contains("block.2.weight"),
                       UsageError);
  CHECK_THROWS_AS(net.parameter("a.stat"), UsageError);
  CHECK_THROWS_AS(net.buffer("a.weight"), UsageError);
  CHECK_THROWS_AS(net.submodule("block.7"), UsageError);
}

TEST_CASE("state_dict lists each module's parameters, buffers, masks, then its children") {
  Net net;
  net.set_mask("block.0.weight", Tensor::ones({2, 2}));
  CHECK(keys(net.state_dict()) ==
        std::vector<std::string>{"scale", "a.weight", "a.bias", "a.stat", "block.0.weight",
                                 "block.0.bias", "block.0.stat", "block.0.weight_mask",
                                 "block.1.weight", "block.1.bias", "block.1.stat"});
  CHECK(keys(net.named_buffers()) ==
        std::vector<std::string>{"a.stat", "block.0.stat", "block.0.weight_mask", "block.1.stat"});
  // Entries alias the module's values but carry no autograd history.
  const NamedTensors state = net.state_dict();
  CHECK(state[1].second.shares_storage_with(net.parameter("a.weight")));
  CHECK_FALSE(state[1].second.requires_grad());
}

TEST_CASE("registration rejects duplicate, dotted and reserved names") {
  Leaf leaf(2);
  CHECK_THROWS_AS(leaf.register_parameter("weight", Tensor::zeros({1})), UsageError);
  CHECK_THROWS_AS(leaf.register_buffer("stat", Tensor::zeros({1})), UsageError);
  CHECK_THROWS_AS(leaf.register_buffer("a.b", Tensor::zeros({1})), UsageError);
  CHECK_THROWS_AS(leaf.register_buffer("", Tensor::zeros({1})), UsageError);
  CHECK_THROWS_AS(leaf.register_buffer("weight_mask", Tensor::zeros({1})), UsageError);
  CHECK_THROWS_AS(leaf.register_parameter("undefined", Tensor()), UsageError);
  leaf.register_buffer("extra", Tensor::zeros({1}));
  CHECK(leaf.named_buffers().size() == 2);
}

TEST_CASE("train and eval reach every descendant, including later children") {
  Net net;
  CHECK(net.is_training());
  net.eval();
  CHECK_FALSE(net.is_training());
  CHECK_FALSE(net.a_->is_training());
  CHECK_FALSE((*net.block_)[1].is_training());
  net.block_->emplace_back<Leaf>(2);  // joins in the parent's mode
  CHECK_FALSE((*net.block_)[2].is_training());
  net.train();
  CHECK((*net.block_)[2].is_training());
  net.train(false);
  CHECK_FALSE(net.a_->is_training());
}

TEST_CASE("zero_grad drops every parameter gradient") {
  Net net;
  const Tensor x = testing::randn({3, 2}, 1);
  net.forward(x).backward(testing::randn({3, 2}, 2));
  CHECK(net.parameter("a.weight").grad().defined());
  CHECK(net.parameter("block.1.bias").grad().defined());
  net.zero_grad();
  for (const Tensor& p : net.parameters()) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("forward of the test net matches a hand computation") {
  Net net;
  // a: W = [[1, 1.25], [1.5, 1.75]], b = 0.5; x = [1, 2] -> [4, 5.5]
  // block.0: W = [[2, 2.25], [2.5, 2.75]] -> [8 + 12.375 + .5, 10 + 15.125 + .5] = [20.875, 25.625]
  const Tensor y = net.a_->forward(Tensor::from_data({1, 2}, {1.f, 2.f}));
  CHECK(y.at(0) == doctest::Approx(4.f));
  CHECK(y.at(1) == doctest::Approx(5.5f));
  const Tensor z = (*net.block_)[0].forward(y);
  CHECK(z.at(0) == doctest::Approx(20.875f));
  CHECK(z.at(1) == doctest::Approx(25.625f));
}

TEST_CASE("load_state_dict copies values and reports bad keys and shapes") {
  Net src(3.f), dst(1.f);
  const Tensor x = testing::randn({4, 2}, 3);
  src.buffer("block.1.stat").fill_(7.f);
  dst.load_state_dict(src.state_dict());
  CHECK(testing::max_abs_diff(dst.forward(x), src.forward(x)) == 0.f);
  CHECK(dst.buffer("block.1.stat").at(1) == 7.f);
  CHECK_FALSE(dst.parameter("a.weight").shares_storage_with(src.parameter("a.weight")));

  Net fresh;
  const float before = fresh.parameter("a.weight").at(0);
  NamedTensors missing = src.state_dict();
  missing.erase(missing.begin() + 2);  // a.bias
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(missing), doctest::Contains("missing key 'a.bias'"),
                       FormatError);
  NamedTensors unexpected = src.state_dict();
  unexpected.emplace_back("block.1.extra", Tensor::zeros({1}));
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(unexpected),
                       doctest::Contains("unexpected key 'block.1.extra'"), FormatError);
  NamedTensors wrong_shape = src.state_dict();
  wrong_shape[4].second = Tensor::zeros({2, 3});  // block.0.weight
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(wrong_shape),
                       doctest::Contains("shape mismatch for 'block.0.weight'"), FormatError);
  NamedTensors duplicate = src.state_dict();
  duplicate.push_back(duplicate[0]);
  CHECK_THROWS_WITH_AS(fresh.load_state_dict(duplicate), doctest::Contains("duplicate key 'scale'"),
                       FormatError);
  // A failed load changes nothing.
  CHECK(fresh.parameter("a.weight").at(0) == before);

  // Non-strict loading skips unknown and missing keys but still checks shapes.
  fresh.load_state_dict(unexpected, false);
  CHECK(fresh.parameter("a.weight").at(0) == 3.f);
  Net partial;
  partial.load_state_dict(missing, false);
  CHECK(partial.parameter("a.bias").at(0) == 0.5f);
  CHECK_THROWS_AS(partial.load_state_dict(wrong_shape, false), FormatError);
}

TEST_CASE("masks are named buffers that checkpoints carry") {
  Net src;
  Tensor m = Tensor::ones({2, 2});
  m.data()[1] = 0.f;
  src.set_mask("block.1.weight", m);
  m.data()[2] = 0.f;  // set_mask copied: the attached mask is unchanged
  CHECK(src.mask("block.1.weight").at(2) == 1.f);
  CHECK(keys(src.named_masks()) == std::vector<std::string>{"block.1.weight"});

  // A fresh model gets the mask attached by load_state_dict.
  Net dst(5.f);
  CHECK_FALSE(dst.has_mask("block.1.weight"));
  dst.load_state_dict(src.state_dict());
  REQUIRE(dst.has_mask("block.1.weight"));
  CHECK(dst.mask("block.1.weight").at(1) == 0.f);
  CHECK(dst.mask("block.1.weight").at(0) == 1.f);
  const Tensor x = testing::randn({3, 2}, 4);
  CHECK(testing::max_abs_diff(dst.forward(x), src.forward(x)) == 0.f);

  // A masked model refuses a checkpoint without its mask (strict).
  Net plain;
  CHECK_THROWS_WITH_AS(dst.load_state_dict(plain.state_dict()),
                       doctest::Contains("missing key 'block.1.weight_mask'"), FormatError);
  // Masks of non-prunable parameters and non-binary masks are rejected.
  NamedTensors bad = plain.state_dict();
  bad.emplace_back("a.bias_mask", Tensor::ones({2}));
  CHECK_THROWS_WITH_AS(plain.load_state_dict(bad),
                       doctest::Contains("unexpected key 'a.bias_mask'"), FormatError);
  NamedTensors not_binary = plain.state_dict();
  not_binary.emplace_back("a.weight_mask", Tensor::full({2, 2}, 0.5f));
  CHECK_THROWS_WITH_AS(plain.load_state_dict(not_binary), doctest::Contains("a.weight_mask"),
                       FormatError);
  CHECK_FALSE(plain.has_mask("a.weight"));
}

TEST_CASE("set_mask validates and the forward uses weight * mask") {
  Net net;
  CHECK(net.prunable_parameter_names() ==
        std::vector<std::string>{"a.weight", "block.0.weight", "block.1.weight"});
  CHECK(net.prunable_parameter_names({"block.*"}) ==
        std::vector<std::string>{"block.0.weight", "block.1.weight"});
  CHECK(net.prunable_parameter_names({"*.bias", "a.*"}) == std::vector<std::string>{"a.weight"});
  CHECK_THROWS_WITH_AS(net.set_mask("a.bias", Tensor::ones({2})), doctest::Contains("not prunable"),
                       UsageError);
  CHECK_THROWS_WITH_AS(net.set_mask("a.nothing", Tensor::ones({2, 2})),
                       doctest::Contains("a.nothing"), UsageError);
  CHECK_THROWS_AS(net.set_mask("a.weight", Tensor::ones({4})), UsageError);
  CHECK_THROWS_AS(net.set_mask("a.weight", Tensor::full({2, 2}, 2.f)), UsageError);

  // Mask a.weight = [[1, 1.25], [1.5, 1.75]] to [[1, 0], [0, 1.75]]: x = [1, 2] -> [1.5, 4].
  net.set_mask("a.weight", Tensor::from_data({2, 2}, {1.f, 0.f, 0.f, 1.f}));
  const Tensor x = Tensor::from_data({1, 2}, {1.f, 2.f});
  Tensor y = net.a_->forward(x);
  CHECK(y.at(0) == doctest::Approx(1.5f));
  CHECK(y.at(1) == doctest::Approx(4.f));
  CHECK(net.parameter("a.weight").at(1) == 1.25f);  // not zeroed until apply_masks

  // The mask handle is the buffer itself: a pruner may edit it in place.
  net.mask("a.weight").data()[3] = 0.f;
  y = net.a_->forward(x);
  CHECK(y.at(1) == doctest::Approx(0.5f));
  // Replacing a mask keeps the buffer's identity.
  Tensor handle = net.mask("a.weight");
  net.set_mask("a.weight", Tensor::ones({2, 2}));
  CHECK(handle.at(3) == 1.f);

  net.remove_mask("a.weight");
  CHECK_FALSE(net.has_mask("a.weight"));
  CHECK(net.named_masks().empty());
}

TEST_CASE("in inference weight * mask is kept until the weight or the mask changes") {
  Net net;
  net.set_mask("a.weight", Tensor::from_data({2, 2}, {1.f, 0.f, 0.f, 1.f}));
  const Tensor x = Tensor::from_data({1, 2}, {1.f, 2.f});
  {
    NoGradGuard no_grad;
    const Tensor first = net.a_->masked_parameter("weight");
    CHECK(net.a_->masked_parameter("weight").shares_storage_with(first));  // kept
    CHECK(net.a_->forward(x).at(1) == doctest::Approx(4.f));
    net.parameter("a.weight").data()[3] = 3.f;  // an optimizer step, a load, ...
    const Tensor after_weight = net.a_->masked_parameter("weight");
    CHECK(after_weight.at(3) == 3.f);
    CHECK(net.a_->forward(x).at(1) == doctest::Approx(6.5f));  // 3 x 2 + the bias 0.5
    net.mask("a.weight").data()[3] = 0.f;                      // a pruning step
    CHECK(net.a_->masked_parameter("weight").at(3) == 0.f);
    CHECK(net.a_->forward(x).at(1) == doctest::Approx(0.5f));
  }
  // With grad mode on every call records its own product (a graph node).
  const Tensor a = net.a_->masked_parameter("weight");
  CHECK_FALSE(net.a_->masked_parameter("weight").shares_storage_with(a));
}

TEST_CASE("a pruned weight stays zero") {
  Net net;
  testing::check_pruned_weight_stays_zero(net, "block.0.weight", testing::randn({5, 2}, 6));
}

TEST_CASE("gradient check through masked and unmasked parameters") {
  Net net;
  net.set_mask("a.weight", Tensor::from_data({2, 2}, {1.f, 0.f, 1.f, 1.f}));
  testing::check_module_gradients(net, testing::randn({3, 2}, 7));
}

TEST_CASE("state round trip into a module built with other values") {
  testing::check_state_round_trip(
      [](uint64_t seed) { return std::make_unique<Net>(static_cast<float>(seed)); },
      testing::randn({3, 2}, 8));
}
