// Sequential: children "0", "1", ..., chained forward, nested names,
// gradients, state round trip and pruning through a child.
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "core/error.h"
#include "core/ops/elementwise.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/relu.h"
#include "layers/sequential.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;

namespace {
/// Linear(4, 6) - ReLU - Linear(6, 3).
std::unique_ptr<Sequential> mlp(uint64_t seed) {
  Generator gen(seed);
  auto seq = std::make_unique<Sequential>();
  seq->emplace_back<Linear>(4, 6, Bias::kYes, gen);
  seq->emplace_back<ReLU>();
  seq->push_back(std::make_unique<Linear>(6, 3, Bias::kYes, gen));
  return seq;
}
}  // namespace

TEST_CASE("Sequential names its children by index") {
  auto seq = mlp(1);
  CHECK(seq->size() == 3);
  std::vector<std::string> names;
  for (auto& [name, t] : seq->named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  CHECK(seq->named_children()[1].first == "1");
  CHECK(seq->prunable_parameter_names() == std::vector<std::string>{"0.weight", "2.weight"});
  CHECK(dynamic_cast<ReLU*>(&(*seq)[1]) != nullptr);
  CHECK_THROWS_AS((*seq)[3], UsageError);
  CHECK_THROWS_AS((*seq)[-1], UsageError);
}

TEST_CASE("Sequential forward chains its modules") {
  auto seq = mlp(2);
  const Tensor x = testing::randn({5, 4}, 3);
  const Tensor expected = (*seq)[2].forward(ops::relu((*seq)[0].forward(x)));
  const Tensor y = seq->forward(x);
  REQUIRE(y.shape() == Shape{5, 3});
  CHECK(testing::max_abs_diff(y, expected) == 0.f);

  Sequential empty;
  CHECK(testing::max_abs_diff(empty.forward(x), x) == 0.f);

  std::vector<std::unique_ptr<Module>> parts;
  parts.push_back(std::make_unique<Flatten>());
  parts.push_back(std::make_unique<ReLU>());
  Sequential from_list(std::move(parts));
  CHECK(from_list.size() == 2);
  const Tensor z = from_list.forward(Tensor::from_data({1, 2, 2}, {-1.f, 2.f, -3.f, 4.f}));
  CHECK(z.shape() == Shape{1, 4});
  CHECK(z.at(0) == 0.f);
  CHECK(z.at(3) == 4.f);
}

TEST_CASE("Sequential gradients, round trip and pruning") {
  auto seq = mlp(4);
  testing::check_module_gradients(*seq, testing::randn({3, 4}, 5));
  testing::check_state_round_trip([](uint64_t seed) { return mlp(seed); },
                                  testing::randn({3, 4}, 6));
  auto pruned = mlp(7);
  testing::check_pruned_weight_stays_zero(*pruned, "2.weight", testing::randn({3, 4}, 8));
}
