// The shared pieces around the statistic: PrunableSet, GradientBank, the
// magnitude and diagonal-Fisher pruners on hand-made cases, and prune_step
// (exact counts, monotone masks, report).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "pruning/diag_fisher_pruner.h"
#include "pruning/magnitude_pruner.h"
#include "pruning/prune_step.h"
#include "pruning/woodfisher_pruner.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

PruneStepOptions target(double sparsity) {
  PruneStepOptions o;
  o.sparsity = sparsity;
  return o;
}

}  // namespace

TEST_CASE("PrunableSet lays layers out back to back and shares their storage") {
  Tensor conv = Tensor::from_data({2, 1, 1, 2}, {1, 2, 3, 4});
  Tensor fc = Tensor::from_data({1, 3}, {5, 6, 7});
  PrunableSet set;
  set.add("conv.weight", conv);
  set.add("fc.weight", fc, Tensor::from_data({3}, {1, 0, 1}));
  CHECK(set.size() == 2);
  CHECK(set.numel() == 7);
  CHECK(set.param(1).offset == 4);
  CHECK(set.layer_sizes() == std::vector<int64_t>{4, 3});
  CHECK(set.layer_of(3) == 0);
  CHECK(set.layer_of(4) == 1);
  CHECK(set.flat_weights() == std::vector<float>{1, 2, 3, 4, 5, 6, 7});
  CHECK(set.flat_mask() == std::vector<float>{1, 1, 1, 1, 1, 0, 1});
  CHECK(set.pruned_count(0) == 0);
  CHECK(set.pruned_count() == 1);
  set.apply_masks();
  CHECK(fc.at(1) == 0.f);
  set.prune({0, 6});
  CHECK(conv.at(0) == 0.f);
  CHECK(fc.at(2) == 0.f);
  CHECK(set.pruned_count() == 3);
  CHECK_THROWS_AS(set.add("fc.weight", Tensor::ones({2})), UsageError);
  CHECK_THROWS_AS(set.add("x", Tensor::ones({2}), Tensor::ones({3})), UsageError);
  CHECK_THROWS_AS(set.add("y", Tensor::ones({2}), Tensor::full({2}, 0.5f)), UsageError);
  CHECK_THROWS_AS(set.layer_of(7), UsageError);
}

TEST_CASE("GradientBank stores rows and concatenates parameter gradients") {
  Tensor a = Tensor::zeros({2, 2}), b = Tensor::zeros({3});
  PrunableSet set;
  set.add("a", a);
  set.add("b", b);
  GradientBank bank(7, 4);
  bank.add(std::vector<float>{1, 2, 3, 4, 5, 6, 7});
  a.set_grad(Tensor::from_data({2, 2}, {-1, -2, -3, -4}));
  bank.add_from_grads(set);  // b has no gradient: zeros
  CHECK(bank.rows() == 2);
  CHECK(bank.dim() == 7);
  const auto r = bank.row(1);
  CHECK(std::vector<float>(r.begin(), r.end()) == std::vector<float>{-1, -2, -3, -4, 0, 0, 0});
  CHECK(bank.data()[6] == 7.f);
  CHECK_THROWS_AS(bank.add(std::vector<float>(6, 0.f)), UsageError);
  CHECK_THROWS_AS(bank.row(2), UsageError);
}

TEST_CASE("magnitude: ρ = |w|, smallest magnitudes go first") {
  PrunableSet set;
  set.add("w", Tensor::from_data({5}, {0.5f, -3.f, 1.f, -0.1f, 2.f}));
  MagnitudePruner pruner;
  CHECK(!pruner.needs_fisher());
  CHECK(pruner.scores(set) == std::vector<double>{0.5, 3.0, 1.0, std::fabs(double(-0.1f)), 2.0});
  const PruneReport r = prune_step(pruner, set, nullptr, target(0.4));
  CHECK(set.flat_weights() == std::vector<float>{0.f, -3.f, 1.f, 0.f, 2.f});
  CHECK(set.flat_mask() == std::vector<float>{0, 1, 1, 0, 1});
  CHECK(r.pruned_after == 2);
  CHECK(std::isnan(r.predicted_loss));
}

TEST_CASE("diagonal Fisher: ρ = w² (λ + mean g²) / 2 reorders what magnitude would pick") {
  PrunableSet set;
  set.add("w", Tensor::from_data({3}, {1.f, 2.f, 3.f}));
  GradientBank bank(3);
  bank.add(std::vector<float>{2, 1, 0});
  bank.add(std::vector<float>{-2, 0, 0});
  DiagFisherPruner pruner;
  pruner.prepare(set, &bank, {0.125, 100});
  // F = λ + mean g² = {4.125, 0.625, 0.125}; ρ = {2.0625, 1.25, 0.5625}
  CHECK(pruner.fisher_diagonal() == std::vector<double>{4.125, 0.625, 0.125});
  CHECK(pruner.scores(set) == std::vector<double>{2.0625, 1.25, 0.5625});
  const PruneReport r =
      prune_step(pruner, set, &bank, {2.0 / 3.0, Selection::kGlobal, {0.125, 100}});
  CHECK(set.flat_weights() == std::vector<float>{1.f, 0.f, 0.f});  // magnitude would keep 3
  CHECK(r.predicted_loss == 1.8125);
  CHECK(r.quadratic_loss == 1.8125);
}

TEST_CASE("WoodFisher with c = 1 is diagonal Fisher: same ρ, and the update only zeroes") {
  Generator gen(3);
  PrunableSet set;
  set.add("a", Tensor::randn({300}, gen));
  set.add("b", Tensor::randn({7}, gen));
  GradientBank bank(set.numel());
  for (int s = 0; s < 12; ++s) bank.add(Tensor::randn({set.numel()}, gen).span());
  const FisherOptions fisher{1e-3, 1};
  WoodFisherPruner wood;
  DiagFisherPruner diag;
  wood.prepare(set, &bank, fisher);
  diag.prepare(set, &bank, fisher);
  const std::vector<double> a = wood.scores(set), b = diag.scores(set);
  for (size_t q = 0; q < a.size(); ++q) CHECK(a[q] == doctest::Approx(b[q]).epsilon(1e-6));
  const std::vector<float> before = set.flat_weights();
  wood.update(set, std::vector<int64_t>{0, 5, 301});
  const std::vector<float> after = set.flat_weights();
  for (size_t q = 0; q < after.size(); ++q)
    CHECK(after[q] == (q == 0 || q == 5 || q == 301 ? 0.f : before[q]));
}

TEST_CASE("prune_step: exact counts, monotone masks, every pruner, both selections") {
  const int64_t m = 20;
  Generator gen(21);
  for (int which = 0; which < 4; ++which) {
    for (Selection mode : {Selection::kGlobal, Selection::kPerLayer}) {
      CAPTURE(which);
      CAPTURE(static_cast<int>(mode));
      PrunableSet set;
      set.add("conv", Tensor::randn({4, 2, 3, 3}, gen));  // 72
      set.add("fc", Tensor::randn({10, 5}, gen));         // 50
      GradientBank bank(set.numel(), m);
      for (int64_t s = 0; s < m; ++s) bank.add(Tensor::randn({set.numel()}, gen).span());
      MagnitudePruner magnitude;
      DiagFisherPruner diag;
      WoodFisherPruner exact, summed({ObsUpdate::kSummed, 1.0});
      Pruner* pruners[] = {&magnitude, &diag, &exact, &summed};
      Pruner& pruner = *pruners[which];
      std::vector<float> previous = set.flat_mask();
      for (double s : {0.3, 0.6, 0.6, 0.9}) {
        const PruneReport r = prune_step(pruner, set, &bank, {s, mode, {1e-4, 16}});
        const std::vector<float> mask = set.flat_mask(), w = set.flat_weights();
        for (size_t q = 0; q < mask.size(); ++q) {
          if (previous[q] == 0.f) CHECK(mask[q] == 0.f);  // pruned stays pruned
          if (mask[q] == 0.f) CHECK(w[q] == 0.f);
        }
        previous = mask;
        if (mode == Selection::kGlobal) {
          CHECK(r.pruned_after == target_count(s, 122));
        } else {
          CHECK(r.layers[0].pruned_after == target_count(s, 72));
          CHECK(r.layers[1].pruned_after == target_count(s, 50));
        }
        CHECK(r.size == 122);
        CHECK(r.pruned_after == set.pruned_count());
        CHECK(r.sparsity == doctest::Approx(double(r.pruned_after) / 122));
        CHECK(r.layers[1].name == "fc");
        if (pruner.name() != "magnitude") CHECK(r.predicted_loss >= 0.0);
      }
    }
  }
}

TEST_CASE("prune_step refuses a Fisher pruner without gradients and a bad target") {
  PrunableSet set;
  set.add("w", Tensor::ones({4}));
  WoodFisherPruner pruner;
  CHECK_THROWS_AS(prune_step(pruner, set, nullptr, target(0.5)), UsageError);
  MagnitudePruner magnitude;
  CHECK_THROWS_AS(prune_step(magnitude, set, nullptr, target(1.5)), UsageError);
  CHECK_THROWS_AS(pruner.scores(set), UsageError);
}
