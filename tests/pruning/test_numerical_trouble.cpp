// Numerical trouble in pruning (README, "Reliability guarantees"): a Fisher
// block that is singular even with λ (all-zero gradients, duplicated
// samples, λ at its minimum), NaN or Inf gradients, a layer whose weights are
// all pruned already, and sparsity targets that round to no weight or to
// every weight. Each has one defined outcome, a warning or a one-line error,
// and never a NaN weight, a crash or a silently wrong mask.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/warning.h"
#include "pruning/diag_fisher_pruner.h"
#include "pruning/magnitude_pruner.h"
#include "pruning/prune_step.h"
#include "pruning/woodfisher_pruner.h"
#include "reference.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

/// Collects the warnings issued while it lives.
struct CapturedWarnings {
  std::vector<std::string> messages;
  WarningHandler previous;
  CapturedWarnings() {
    previous = set_warning_handler([this](const std::string& m) { messages.push_back(m); });
  }
  ~CapturedWarnings() { set_warning_handler(previous); }
  bool any_contains(const std::string& text) const {
    return std::any_of(messages.begin(), messages.end(),
                       [&](const std::string& m) { return m.find(text) != std::string::npos; });
  }
};

bool all_finite(const std::vector<float>& w) {
  return std::all_of(w.begin(), w.end(), [](float v) { return std::isfinite(v); });
}

/// Every pruner the library has, WoodFisher with each inverse form.
struct AllPruners {
  MagnitudePruner magnitude;
  DiagFisherPruner diag;
  WoodFisherPruner exact_auto, exact_direct{{ObsUpdate::kExact, 1.0, InverseMethod::kDirect}},
      exact_gram{{ObsUpdate::kExact, 1.0, InverseMethod::kGram}},
      exact_recursion{{ObsUpdate::kExact, 1.0, InverseMethod::kRecursion, 4}},
      summed{{ObsUpdate::kSummed, 1.0}};
  std::vector<Pruner*> all() {
    return {&magnitude, &diag, &exact_auto, &exact_direct, &exact_gram, &exact_recursion, &summed};
  }
};

const char* method_name(InverseMethod m) {
  switch (m) {
    case InverseMethod::kAuto:
      return "auto";
    case InverseMethod::kDirect:
      return "direct";
    case InverseMethod::kGram:
      return "gram";
    case InverseMethod::kRecursion:
      return "recursion";
  }
  return "?";
}

}  // namespace

TEST_CASE(
    "all-zero gradients for a layer: its block is λI, pruned by magnitude, nothing else moves") {
  for (InverseMethod method :
       {InverseMethod::kDirect, InverseMethod::kGram, InverseMethod::kRecursion}) {
    CAPTURE(method_name(method));
    Generator gen(5);
    PrunableSet set;
    set.add("live", Tensor::randn({24}, gen));
    set.add("dead", Tensor::randn({10}, gen));
    GradientBank bank(set.numel());
    for (int s = 0; s < 6; ++s) {
      std::vector<float> row(34, 0.f);
      for (int q = 0; q < 24; ++q) row[q] = gen.normal();
      bank.add(row);
    }
    const std::vector<float> all_before = set.flat_weights();
    const std::vector<float> dead_before(all_before.begin() + 24, all_before.end());
    CapturedWarnings warnings;
    WoodFisherPruner pruner({ObsUpdate::kExact, 1.0, method, 4});
    prune_step(pruner, set, &bank, {0.5, Selection::kPerLayer, {1e-4, 100}});
    CHECK(warnings.messages.empty());
    const std::vector<float> w = set.flat_weights();
    CHECK(all_finite(w));
    // The 5 smallest |w| of "dead" are gone, the others are exactly as they were.
    std::vector<float> sorted(dead_before);
    std::sort(sorted.begin(), sorted.end(),
              [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    for (int j = 0; j < 10; ++j) {
      const bool small = std::fabs(dead_before[j]) <= std::fabs(sorted[4]);
      CHECK(w[24 + j] == (small ? 0.f : dead_before[j]));
    }
  }
}

TEST_CASE(
    "duplicated samples at the minimum λ: the block's λ is raised, with a warning, to an exact "
    "inverse") {
  const int64_t d = 40, m = 12;
  Generator gen(11);
  std::vector<float> g1(d), g2(d);
  for (auto& v : g1) v = gen.normal();
  for (auto& v : g2) v = gen.normal();
  GradientBank bank(d, m);
  for (int64_t s = 0; s < m; ++s) bank.add(s % 2 ? g1 : g2);  // rank 2
  for (InverseMethod method :
       {InverseMethod::kDirect, InverseMethod::kGram, InverseMethod::kRecursion}) {
    CAPTURE(method_name(method));
    const BlockInverse inv =
        block_fisher_inverse(bank, make_blocks(std::vector<int64_t>{d}, 20), {kMinDamp, method, 4});
    REQUIRE(inv.raised_blocks() == std::vector<int64_t>{0, 1});
    for (int64_t b = 0; b < 2; ++b) {
      const Block blk = inv.blocks()[b];
      double max_diag = 0.0;
      for (int64_t q = blk.begin; q < blk.end; ++q)
        max_diag = std::max(max_diag, (double(g1[q]) * g1[q] + double(g2[q]) * g2[q]) / 2.0);
      CHECK(inv.block_damp(b) == doctest::Approx(kDampFloor * max_diag));
      const ref::Mat want = ref::inverse(
          ref::fisher(bank.data(), m, d, blk.begin, blk.size(), inv.block_damp(b)), blk.size());
      for (int64_t i = 0; i < blk.size(); ++i) {
        const double got = inv.diagonal()[blk.begin + i], exact = want[i * (blk.size() + 1)];
        CHECK(std::fabs(got - exact) / exact < 1e-3);
      }
    }
  }
  // Through prune_step: a warning naming the layer, finite weights, the exact count.
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    PrunableSet set;
    set.add("fc.weight", Tensor::randn({d}, gen));
    CapturedWarnings warnings;
    WoodFisherPruner exact, summed({ObsUpdate::kSummed, 1.0});
    Pruner& pruner = which == 0 ? static_cast<Pruner&>(exact) : summed;
    const PruneReport r =
        prune_step(pruner, set, &bank, {0.75, Selection::kGlobal, {kMinDamp, 20}});
    CHECK(r.pruned_after == 30);
    CHECK(all_finite(set.flat_weights()));
    REQUIRE(warnings.messages.size() == 1);
    CHECK(warnings.any_contains("'fc.weight'"));
    CHECK(warnings.any_contains("2 of 2 Fisher blocks"));
  }
}

TEST_CASE(
    "λ outside [1e-30, 1e30] and gradients too large for a float inverse are one-line errors") {
  GradientBank bank(4);
  bank.add(std::vector<float>{1, 2, 3, 4});
  for (double damp : {0.0, 1e-31, 1e31})
    CHECK_THROWS_AS(block_fisher_inverse(bank, make_blocks(std::vector<int64_t>{4}, 4), {damp}),
                    UsageError);
  GradientBank huge(2);
  huge.add(std::vector<float>{1e30f, 0.f});  // F_00 = 1e60: 1/F_00 is 0 in float
  CHECK_THROWS_AS(block_fisher_inverse(huge, make_blocks(std::vector<int64_t>{2}, 2), {1e-5}),
                  NumericalError);
}

TEST_CASE(
    "a NaN or Inf Fisher gradient is an error naming the gradient and the layer; nothing changes") {
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    AllPruners pruners;
    for (Pruner* pruner : pruners.all()) {
      if (!pruner->needs_fisher()) continue;
      CAPTURE(pruner->name());
      Generator gen(2);
      PrunableSet set;
      set.add("conv", Tensor::randn({8}, gen));
      set.add("fc", Tensor::randn({6}, gen));
      GradientBank bank(14);
      for (int s = 0; s < 3; ++s) {
        std::vector<float> row(14);
        for (auto& v : row) v = gen.normal();
        if (s == 1) row[11] = bad;
        bank.add(row);
      }
      const std::vector<float> before = set.flat_weights(), mask = set.flat_mask();
      std::string message;
      try {
        prune_step(*pruner, set, &bank, {0.5, Selection::kGlobal, {1e-4, 4}});
      } catch (const NumericalError& e) {
        message = e.what();
      }
      CHECK(message.find("Fisher gradient 2 of 3 is " +
                         std::string(std::isnan(bad) ? "NaN" : "Inf") + " at weight 3 of 'fc'") !=
            std::string::npos);
      CHECK(message.find('\n') == std::string::npos);
      CHECK(set.flat_weights() == before);
      CHECK(set.flat_mask() == mask);
    }
  }
}

TEST_CASE(
    "a layer whose weights are all pruned already: it stays so, the rest is pruned to target") {
  for (Selection mode : {Selection::kGlobal, Selection::kPerLayer}) {
    AllPruners pruners;
    for (Pruner* pruner : pruners.all()) {
      CAPTURE(pruner->name());
      CAPTURE(static_cast<int>(mode));
      Generator gen(8);
      PrunableSet set;
      set.add("a", Tensor::randn({30}, gen));
      set.add("gone", Tensor::randn({10}, gen), Tensor::zeros({10}));
      set.apply_masks();
      GradientBank bank(40);
      for (int s = 0; s < 5; ++s) bank.add(Tensor::randn({40}, gen).span());
      const PruneReport r = prune_step(*pruner, set, &bank, {0.5, mode, {1e-4, 8}});
      CHECK(all_finite(set.flat_weights()));
      CHECK(r.layers[1].pruned_after == 10);
      CHECK(r.layers[0].pruned_after == (mode == Selection::kGlobal ? 10 : 15));
    }
  }
}

TEST_CASE("targets that round to no weight prune none, to every weight keep one; both warn") {
  PrunableSet set;
  set.add("tiny", Tensor::from_data({3}, {0.5f, -2.f, 1.f}));
  set.add("big", Tensor::from_data({8}, {1, 2, 3, 4, 5, 6, 7, 8}));
  MagnitudePruner pruner;
  {
    CapturedWarnings warnings;
    const auto chosen = select_to_prune(set, pruner.scores(set), 0.1, Selection::kPerLayer);
    CHECK(chosen == std::vector<int64_t>{3});  // big: round(0.8) = 1; tiny: round(0.3) = 0
    REQUIRE(warnings.messages.size() == 1);
    CHECK(warnings.any_contains("rounds to no weight of 'tiny' (3)"));
  }
  {
    CapturedWarnings warnings;
    // tiny: round(2.7) = 3 = all, so 2 (the highest |w|, -2, stays); big: round(7.2) = 7.
    const auto chosen = select_to_prune(set, pruner.scores(set), 0.9, Selection::kPerLayer);
    CHECK(chosen == std::vector<int64_t>{0, 2, 3, 4, 5, 6, 7, 8, 9});
    REQUIRE(warnings.messages.size() == 1);
    CHECK(warnings.any_contains("rounds to every weight of 'tiny' (3); one weight"));
  }
  {
    CapturedWarnings warnings;
    const auto chosen = select_to_prune(set, pruner.scores(set), 0.96, Selection::kGlobal);
    CHECK(chosen.size() == 10);  // round(10.56) = 11 = all: one kept
    CHECK(std::find(chosen.begin(), chosen.end(), 10) == chosen.end());  // the 8
    CHECK(warnings.any_contains("rounds to every weight of all 11 weights"));
  }
  {
    CapturedWarnings warnings;  // exactly 1 and exactly 0 are what was asked: no warning
    CHECK(select_to_prune(set, pruner.scores(set), 1.0, Selection::kPerLayer).size() == 11);
    CHECK(select_to_prune(set, pruner.scores(set), 0.0, Selection::kGlobal).empty());
    CHECK(warnings.messages.empty());
  }
}
