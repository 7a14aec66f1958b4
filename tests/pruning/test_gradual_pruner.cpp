// The library's gradual pruning (pruning/gradual_pruner.h, stepwise.h) and
// the pruner table (pruner_registry.h), on a two-layer model small enough to
// count by hand: the steps and targets of the schedule, exact counts, masks
// that only grow, k recompute sub-steps (intermediate targets, fresh
// gradients for each), and the errors a caller can make.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "layers/linear.h"
#include "layers/relu.h"
#include "layers/sequential.h"
#include "pruning/gradual_pruner.h"
#include "pruning/pruner_registry.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

// 6 -> 5 -> 3 without biases: d = 30 + 15 = 45 prunable weights.
std::unique_ptr<Sequential> small_model() {
  Generator gen(3);
  auto m = std::make_unique<Sequential>();
  m->emplace_back<Linear>(6, 5, Bias::kNo, gen);
  m->emplace_back<ReLU>();
  m->emplace_back<Linear>(5, 3, Bias::kNo, gen);
  return m;
}

// Per-sample mini-batches of a fixed random stream, counting the calls.
struct Batches {
  Generator gen{11};
  int64_t calls = 0;
  BatchSource source() {
    return [this] {
      ++calls;
      return std::make_pair(Tensor::randn({1, 6}, gen),
                            std::vector<int32_t>{static_cast<int32_t>(calls % 3)});
    };
  }
};

GradualPruningOptions options(const std::string& method, int64_t sub_steps = 1) {
  GradualPruningOptions o;
  o.method = parse_method(method);
  o.schedule = {
      .start = 2, .end = 6, .frequency = 2, .initial_sparsity = 0.2, .final_sparsity = 0.8};
  o.fisher = {.damp = 1e-3, .block_size = 8, .samples = 5};
  o.sub_steps = sub_steps;
  return o;
}

int64_t round_half_up(double x) { return static_cast<int64_t>(std::floor(x + 0.5)); }

}  // namespace

TEST_CASE("gradual pruning: steps at 2, 4, 6, exact cubic counts, masks only grow") {
  for (const std::string method : {"magnitude", "diagfisher", "woodfisher", "woodfisher-summed"}) {
    CAPTURE(method);
    auto model = small_model();
    GradualPruner pruner(*model, {"*"}, options(method));
    CHECK(model->named_masks().size() == 2);
    Batches batches;
    std::vector<float> mask_before(45, 1.f);
    for (int64_t t = 0; t <= 7; ++t) {
      CHECK(pruner.is_step(t) == (t == 2 || t == 4 || t == 6));
      if (!pruner.is_step(t)) continue;
      const GradualStep step = pruner.prune(t, batches.source());
      // s_t = s_f + (s_i - s_f)(1 - (t - 2) / 4)³, computed here.
      const double expected = 0.8 + (0.2 - 0.8) * std::pow(1.0 - (t - 2) / 4.0, 3);
      CHECK(step.target == doctest::Approx(expected).epsilon(1e-12));
      CHECK(pruner.prunable().pruned_count() == round_half_up(expected * 45));
      const auto mask = pruner.prunable().flat_mask();
      for (size_t q = 0; q < mask.size(); ++q) CHECK(mask[q] <= mask_before[q]);
      for (size_t q = 0; q < mask.size(); ++q)
        if (mask[q] == 0.f) CHECK(pruner.prunable().flat_weights()[q] == 0.f);
      mask_before = mask;
    }
    CHECK(batches.calls == (pruner.needs_fisher() ? 3 * 5 : 0));
    CHECK(pruner.sparsity() == doctest::Approx(36.0 / 45));
  }
}

TEST_CASE("k sub-steps: targets s_0 + (s - s_0) j / k, fresh gradients for each") {
  auto model = small_model();
  GradualPruner pruner(*model, {"*"}, options("woodfisher", 3));
  Batches batches;
  const GradualStep first = pruner.prune(2, batches.source());
  REQUIRE(first.sub_steps.size() == 3);
  CHECK(batches.calls == 3 * 5);
  // From 0 to 0.2 of 45 in thirds: round(3), round(6), round(9).
  CHECK(first.sub_steps[0].report.pruned_after == 3);
  CHECK(first.sub_steps[1].report.pruned_after == 6);
  CHECK(first.sub_steps[2].report.pruned_after == 9);
  CHECK(first.report.pruned_before == 0);
  CHECK(first.report.pruned_after == 9);
  double predicted = 0;
  for (const auto& s : first.sub_steps) predicted += s.report.predicted_loss;
  CHECK(first.report.predicted_loss == doctest::Approx(predicted));
  // The next step starts from 0.2: 9 + (round(0.725 · 45) = 33 − 9) j / 3.
  const GradualStep second = pruner.prune(4, batches.source());
  CHECK(second.sub_steps[0].report.pruned_after == round_half_up(45 * (0.2 + (0.725 - 0.2) / 3)));
  CHECK(second.report.pruned_after == 33);
}

TEST_CASE("gradual pruning refuses a time off the schedule, a missing batch source, bad options") {
  auto model = small_model();
  GradualPruner pruner(*model, {"*"}, options("woodfisher"));
  Batches batches;
  CHECK_THROWS_AS(pruner.prune(3, batches.source()), UsageError);
  CHECK_THROWS_AS(pruner.prune(2, BatchSource()), UsageError);
  auto bad = options("magnitude", 0);
  CHECK_THROWS_AS(GradualPruner(*model, {"*"}, bad), UsageError);
  bad = options("magnitude");
  bad.schedule.end = 1;
  CHECK_THROWS_AS(GradualPruner(*model, {"*"}, bad), UsageError);
  CHECK_THROWS_AS(GradualPruner(*model, {"nothing.*"}, options("magnitude")), UsageError);
  // Magnitude needs no Fisher: no source is fine.
  auto fresh = small_model();
  GradualPruner magnitude(*fresh, {"*"}, options("magnitude"));
  CHECK(magnitude.prune(2, BatchSource()).report.pruned_after == 9);
}

TEST_CASE("the pruner table: every row builds, its name round-trips, modifiers follow the row") {
  for (const PrunerKind& kind : pruner_table()) {
    CAPTURE(kind.name);
    const PruningMethod m = parse_method(kind.name + "-layer");
    CHECK(m.selection == Selection::kPerLayer);
    CHECK(make_pruner(m) != nullptr);
    CHECK(parse_method(m.name()).name() == m.name());
    if (kind.obs_update) {
      CHECK(parse_method(kind.name + "-summed").update == ObsUpdate::kSummed);
      CHECK(parse_method(kind.name + "-noupdate").update_scale == 0.0);
    } else {
      CHECK_THROWS_AS(parse_method(kind.name + "-summed"), UsageError);
    }
  }
  CHECK(pruner_names() ==
        std::vector<std::string>{"magnitude", "diagfisher", "woodfisher", "woodtaylor"});
  // The update scale: from the name, else the caller's default; names round-trip.
  CHECK(parse_method("woodfisher", 0.5).update_scale == 0.5);
  CHECK(parse_method("woodfisher-summed-scale0.25", 0.5).update_scale == 0.25);
  CHECK(parse_method("woodfisher-noupdate", 0.5).update_scale == 0.0);
  CHECK(parse_method("woodfisher-summed", 0.5).name() == "woodfisher-summed-scale0.5");
  CHECK(parse_method("woodfisher-scale0.5").name() == "woodfisher-scale0.5");
  CHECK(parse_method("magnitude", 0.5).name() == "magnitude");
  CHECK_THROWS_AS(parse_method("woodfisher-scale1.5"), UsageError);
  CHECK_THROWS_AS(parse_method("woodfisher-scale"), UsageError);
  CHECK_THROWS_AS(parse_method("woodfisher", -0.1), UsageError);
  CHECK_THROWS_AS(parse_method("obs"), UsageError);
}
