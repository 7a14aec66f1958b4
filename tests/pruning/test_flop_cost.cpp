// FLOP-aware pruning (pruning/README.md, "FLOP-aware pruning"): the costs
// measured from a model's forward against H_out·W_out computed by hand, the
// greedy ρ/c selection on two layers of different costs with every step of
// the order worked out below, and the multiply-adds a prune step reports.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/mac_counter.h"
#include "core/random.h"
#include "core/warning.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/relu.h"
#include "layers/sequential.h"
#include "pruning/flop_cost.h"
#include "pruning/gradual_pruner.h"
#include "pruning/magnitude_pruner.h"
#include "pruning/model_pruning.h"
#include "pruning/prune_step.h"
#include "pruning/pruner_registry.h"
#include "pruning/selection.h"
#include "pruning/stepwise.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

// Input [1, 6, 6]:
//   0  conv 1->2, 3x3, pad 1          -> [2, 6, 6]  18 weights, cost 6·6 = 36
//   2  conv 2->3, 3x3, stride 2       -> [3, 2, 2]  54 weights, cost 2·2 = 4
//   3  depthwise 3x3, pad 1, groups 3 -> [3, 2, 2]  27 weights, cost 4
//   5  linear 12 -> 4                 -> [4]        48 weights, cost 1
// Multiply-adds: 648 + 216 + 108 + 48 = 1020.
std::unique_ptr<Sequential> conv_linear_model() {
  Generator gen(5);
  auto m = std::make_unique<Sequential>();
  m->emplace_back<Conv2d>(1, 2, 3, ops::Conv2dOptions{.padding = 1}, Bias::kYes, gen);
  m->emplace_back<ReLU>();
  m->emplace_back<Conv2d>(2, 3, 3, ops::Conv2dOptions{.stride = 2}, Bias::kNo, gen);
  m->emplace_back<Conv2d>(3, 3, 3, ops::Conv2dOptions{.padding = 1, .groups = 3}, Bias::kNo, gen);
  m->emplace_back<Flatten>();
  m->emplace_back<Linear>(12, 4, Bias::kYes, gen);
  return m;
}

const std::vector<double> kScores{0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.05, 0.6, 0.4, 1.0, 0.15};

// Layer a: 5 weights of cost 4; layer b: 7 weights of cost 1. Dense: 27 multiply-adds.
PrunableSet costed(std::vector<float> mask0 = {}, std::vector<float> mask1 = {}) {
  PrunableSet set;
  set.add("a", Tensor::ones({5}), mask0.empty() ? Tensor() : Tensor::from_data({5}, mask0));
  set.add("b", Tensor::ones({7}), mask1.empty() ? Tensor() : Tensor::from_data({7}, mask1));
  set.set_costs({4, 1}, 100);
  return set;
}

// ρ/c of kScores: a (÷4) .225 .025 .125 .075 .175; b (÷1) .2 .8 .05 .6 .4 1.0 .15.
// Ascending: q1 .025 (cost 4, cumulative 4), q7 .05 (5), q3 .075 (9), q2 .125 (13),
// q11 .15 (14), q4 .175 (18), q5 .2 (19), q0 .225 (23), q9 .4 (24), q8 .6 (25),
// q6 .8 (26), q10 1.0 (27).

}  // namespace

TEST_CASE("measured cost per weight is H_out·W_out for a conv and 1 for a linear layer") {
  auto model = conv_linear_model();
  const PrunableSet set = attach_masks(*model, {"*"});
  REQUIRE(set.size() == 4);
  const FlopCosts costs = measure_flop_costs(*model, set, {1, 6, 6});
  CHECK(costs.per_weight == std::vector<int64_t>{36, 4, 4, 1});
  CHECK(costs.model_macs == 1020);
  CHECK(model->is_training());  // mode restored
}

TEST_CASE("attached costs: the layers outside the set become other_macs") {
  auto model = conv_linear_model();
  PrunableSet set = attach_masks(*model, {"2.weight", "5.weight"});
  attach_flop_costs(*model, set, {1, 6, 6});
  CHECK(set.cost(0) == 4);
  CHECK(set.cost(1) == 1);
  CHECK(set.dense_macs() == 216 + 48);
  CHECK(set.other_macs() == 648 + 108);
  // A masked weight is found through its mask multiplication; pruning it changes nothing here.
  set.prune({0, 1, 2});
  CHECK(measure_flop_costs(*model, set, {1, 6, 6}).per_weight == std::vector<int64_t>{4, 1});
  CHECK(set.remaining_macs() == 216 + 48 - 3 * 4);
}

TEST_CASE("measuring needs the graph and weights the forward uses") {
  auto model = conv_linear_model();
  PrunableSet set = attach_masks(*model, {"*"});
  {
    NoGradGuard no_grad;
    CHECK_THROWS_AS(measure_flop_costs(*model, set, {1, 6, 6}), UsageError);
  }
  set.add("stray", Tensor::ones({3}));
  CHECK_THROWS_AS(measure_flop_costs(*model, set, {1, 6, 6}), UsageError);
}

TEST_CASE("FLOP target: lowest ρ/c first until s·(dense multiply-adds) is removed") {
  const PrunableSet set = costed();
  CHECK(set.dense_macs() == 27);
  // s = 0.5: 13.5 to remove; q2 brings 13, q11 14.
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{1, 2, 3, 7, 11});
  // s = 0.25: 6.75; q3 brings 9.
  CHECK(select_to_prune(set, kScores, 0.25, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{1, 3, 7});
  // Exactly reached: s = 13/27 stops at q2.
  CHECK(select_to_prune(set, kScores, 13.0 / 27.0, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{1, 2, 3, 7});
  CHECK(select_to_prune(set, kScores, 0.0, Selection::kGlobal, Target::kFlops).empty());
  CHECK(select_to_prune(set, kScores, 1.0, Selection::kGlobal, Target::kFlops).size() == 12);
  // The weight count would take the six smallest ρ: {1, 3, 5, 7, 9, 11}, 12 multiply-adds.
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kGlobal) ==
        std::vector<int64_t>{1, 3, 5, 7, 9, 11});
}

TEST_CASE(
    "FLOP target: the greedy prefix has the least Σρ of all sets removing as much (brute force)") {
  const PrunableSet set = costed();
  const std::vector<int64_t> cost{4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1};
  for (int step = 1; step < 27; ++step) {
    const double s = step / 27.0 - 0.01;
    const auto chosen = select_to_prune(set, kScores, s, Selection::kGlobal, Target::kFlops);
    int64_t chosen_cost = 0;
    double chosen_rho = 0;
    for (int64_t q : chosen) chosen_cost += cost[q], chosen_rho += kScores[q];
    CHECK(chosen_cost >= s * 27);
    int beaten = 0;  // sets removing as much at a smaller summed statistic
    for (unsigned subset = 0; subset < (1u << 12); ++subset) {
      int64_t c = 0;
      double rho = 0;
      for (int q = 0; q < 12; ++q)
        if (subset >> q & 1u) c += cost[q], rho += kScores[q];
      if (c >= chosen_cost && rho < chosen_rho - 1e-12) ++beaten;
    }
    CHECK_MESSAGE(beaten == 0, "s = " << s);
  }
}

TEST_CASE("FLOP target: ties in ρ/c by flat index; cheap weights go when ρ is equal") {
  const PrunableSet set = costed();
  // Equal ρ: a's ratio is 1/4 of b's, so a goes first, in index order: 4·4 = 16 >= 13.5 after
  // four of them (12 < 13.5 after three).
  const std::vector<double> same(12, 1.0);
  CHECK(select_to_prune(set, same, 0.5, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{0, 1, 2, 3});
  // Equal ratios across layers (a: 4/4, b: 1/1): index order, a first. 0.3·27 = 8.1 needs
  // three of a (12); reversed scores put b first.
  std::vector<double> ratio_one{4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1};
  CHECK(select_to_prune(set, ratio_one, 0.3, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{0, 1, 2});
  std::vector<double> b_cheaper{4, 4, 4, 4, 4, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9};
  CHECK(select_to_prune(set, b_cheaper, 0.3, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{0, 5, 6, 7, 8, 9, 10, 11});
}

TEST_CASE("FLOP target: cost pruned before counts, and one weight is kept below s = 1") {
  // q1 and q7 pruned already: 5 removed; 13.5 needs q3 (9), q2 (13), q11 (14).
  const PrunableSet set = costed({1, 0, 1, 1, 1}, {1, 1, 0, 1, 1, 1, 1});
  CHECK(pruned_fraction(set, Target::kFlops) == doctest::Approx(5.0 / 27.0));
  CHECK(pruned_fraction(set, Target::kWeights) == doctest::Approx(2.0 / 12.0));
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kGlobal, Target::kFlops) ==
        std::vector<int64_t>{2, 3, 11});
  // Already past the target: nothing.
  CHECK(select_to_prune(set, kScores, 0.1, Selection::kGlobal, Target::kFlops).empty());
  // 0.99·27 = 26.73 would need q10 too, i.e. every weight: q10 (highest ratio) is kept.
  const PrunableSet fresh = costed();
  std::vector<std::string> warnings;
  const WarningHandler previous =
      set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  const auto chosen = select_to_prune(fresh, kScores, 0.99, Selection::kGlobal, Target::kFlops);
  set_warning_handler(previous);
  CHECK(warnings.size() == 1);
  CHECK(chosen.size() == 11);
  CHECK(std::find(chosen.begin(), chosen.end(), 10) == chosen.end());
}

TEST_CASE("FLOP target per layer is the weight-count selection; no costs is an error") {
  const PrunableSet set = costed();
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kPerLayer, Target::kFlops) ==
        select_to_prune(set, kScores, 0.5, Selection::kPerLayer));
  PrunableSet bare;
  bare.add("a", Tensor::ones({4}));
  CHECK_THROWS_AS(select_to_prune(bare, kScores, 0.5, Selection::kGlobal, Target::kFlops),
                  UsageError);
  CHECK_THROWS_AS(bare.set_costs({0}), UsageError);
  CHECK_THROWS_AS(bare.set_costs({1, 1}), UsageError);
}

TEST_CASE("prune step with a FLOP target reports the multiply-adds") {
  // Magnitude: ρ = |w|, so the weights are the scores.
  std::vector<float> w(kScores.begin(), kScores.end());
  PrunableSet set;
  set.add("a", Tensor::from_data({5}, std::vector<float>(w.begin(), w.begin() + 5)));
  set.add("b", Tensor::from_data({7}, std::vector<float>(w.begin() + 5, w.end())));
  set.set_costs({4, 1}, 100);
  MagnitudePruner pruner;
  PruneStepOptions o;
  o.sparsity = 0.5;
  o.target = Target::kFlops;
  const PruneReport r = prune_step(pruner, set, nullptr, o);
  CHECK(r.pruned_after == 5);  // {1, 2, 3, 7, 11}
  CHECK(r.layers[0].pruned_after == 3);
  CHECK(r.macs_dense == 27);
  CHECK(r.macs_before == 27);
  CHECK(r.macs_after == 27 - 14);
  CHECK(r.model_macs_dense == 127);
  CHECK(r.model_macs_after == 113);
  // Without costs the multiply-adds stay 0.
  PrunableSet bare;
  bare.add("a", Tensor::from_data({5}, std::vector<float>(w.begin(), w.begin() + 5)));
  const PruneReport plain = prune_step(pruner, bare, nullptr, {.sparsity = 0.4});
  CHECK(plain.macs_dense == 0);
  CHECK(plain.model_macs_after == 0);
}

TEST_CASE("a FLOP-aware gradual run on the conv model: method name, costs, reached target") {
  const PruningMethod method = parse_method("magnitude-flops");
  CHECK(method.target == Target::kFlops);
  CHECK(method.name() == "magnitude-flops");
  CHECK(parse_method("woodfisher-layer-flops-summed").name() == "woodfisher-layer-flops-summed");
  CHECK(parse_method("woodfisher").target == Target::kWeights);

  GradualPruningOptions o;
  o.method = method;
  o.schedule = {
      .start = 0, .end = 2, .frequency = 1, .initial_sparsity = 0.3, .final_sparsity = 0.6};
  auto model = conv_linear_model();
  CHECK_THROWS_AS(GradualPruner(*model, {"*"}, o), UsageError);  // no sample shape
  o.sample_shape = {1, 6, 6};
  GradualPruner pruner(*model, {"*"}, o);
  CHECK(pruner.prunable().dense_macs() == 1020);
  for (int64_t t = 0; t <= 2; ++t) {
    const GradualStep step = pruner.prune(t, {});
    // At least the target, and less than one weight of the dearest layer (36) beyond it.
    const double removed = 1020.0 - static_cast<double>(step.report.macs_after);
    CHECK(removed >= step.target * 1020);
    CHECK(removed < step.target * 1020 + 36);
    CHECK(step.report.model_macs_after == step.report.macs_after);  // every layer is prunable
  }
}

TEST_CASE("sub-steps toward a FLOP target start from the multiply-adds removed so far") {
  auto model = conv_linear_model();
  PrunableSet set = attach_masks(*model, {"*"});
  attach_flop_costs(*model, set, {1, 6, 6});
  const PruningMethod method = parse_method("magnitude-flops");
  MagnitudePruner pruner;
  prune_in_steps(*model, set, pruner, method, {}, 0.3, 1, {});
  const double start = pruned_fraction(set, Target::kFlops);
  CHECK(start != doctest::Approx(pruned_fraction(set, Target::kWeights)));
  const auto steps = prune_in_steps(*model, set, pruner, method, {}, 0.6, 2, {});
  REQUIRE(steps.size() == 2);
  const double middle = start + (0.6 - start) / 2;
  const double removed = 1.0 - static_cast<double>(steps[0].report.macs_after) / 1020.0;
  CHECK(removed >= middle);
  CHECK(removed < middle + 36.0 / 1020.0);
  CHECK(combine(steps).macs_before == steps[0].report.macs_before);
}
