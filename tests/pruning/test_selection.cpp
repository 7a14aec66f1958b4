// Selection: exact counts, deterministic ties, pruned weights stay pruned and
// count toward the target.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "pruning/selection.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

/// Layers of sizes {5, 7} with the given masks (empty = all kept).
PrunableSet two_layers(std::vector<float> mask0 = {}, std::vector<float> mask1 = {}) {
  PrunableSet set;
  set.add("a", Tensor::ones({5}), mask0.empty() ? Tensor() : Tensor::from_data({5}, mask0));
  set.add("b", Tensor::ones({7}), mask1.empty() ? Tensor() : Tensor::from_data({7}, mask1));
  return set;
}

const std::vector<double> kScores{0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.05, 0.6, 0.4, 1.0, 0.15};

}  // namespace

TEST_CASE("target_count rounds half away from zero and checks the range") {
  CHECK(target_count(0.5, 5) == 3);
  CHECK(target_count(0.5, 7) == 4);
  CHECK(target_count(0.9, 268336) == 241502);
  CHECK(target_count(0.0, 10) == 0);
  CHECK(target_count(1.0, 10) == 10);
  CHECK_THROWS_AS(target_count(1.5, 10), UsageError);
  CHECK_THROWS_AS(target_count(-0.1, 10), UsageError);
  CHECK_THROWS_AS(target_count(std::nan(""), 10), UsageError);
}

TEST_CASE("global: the round(s·d) smallest scores over all layers") {
  const PrunableSet set = two_layers();
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kGlobal) ==
        std::vector<int64_t>{1, 3, 5, 7, 9, 11});
  CHECK(select_to_prune(set, kScores, 0.25, Selection::kGlobal) == std::vector<int64_t>{1, 7, 11});
  CHECK(select_to_prune(set, kScores, 0.0, Selection::kGlobal).empty());
  CHECK(select_to_prune(set, kScores, 1.0, Selection::kGlobal).size() == 12);
}

TEST_CASE("per layer: each layer to round(s·d_l) on its own") {
  const PrunableSet set = two_layers();
  // layer a [0,5): round(2.5) = 3 -> {1, 3, 2}; layer b [5,12): round(3.5) = 4 -> {7, 11, 5, 9}
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kPerLayer) ==
        std::vector<int64_t>{1, 2, 3, 5, 7, 9, 11});
}

TEST_CASE("ties are broken by flat index") {
  const PrunableSet set = two_layers();
  const std::vector<double> same(12, 0.25);
  CHECK(select_to_prune(set, same, 0.25, Selection::kGlobal) == std::vector<int64_t>{0, 1, 2});
  CHECK(select_to_prune(set, same, 0.5, Selection::kPerLayer) ==
        std::vector<int64_t>{0, 1, 2, 5, 6, 7, 8});
  std::vector<double> partial = kScores;
  partial[9] = partial[11] = partial[3] = 0.1;  // ties with index 1
  CHECK(select_to_prune(set, partial, 0.25, Selection::kGlobal) == std::vector<int64_t>{1, 3, 7});
}

TEST_CASE("already-pruned weights count toward the target and are never chosen again") {
  // Index 7 has the lowest score but is already pruned, as are 0 and 4.
  const PrunableSet set = two_layers({0, 1, 1, 1, 0}, {1, 1, 0, 1, 1, 1, 1});
  const std::vector<int64_t> global = select_to_prune(set, kScores, 0.5, Selection::kGlobal);
  CHECK(global == std::vector<int64_t>{1, 5, 11});  // 3 before + 3 new = 6 = round(0.5·12)
  // Per layer: a has 2 of round(2.5) = 3 -> 1 more; b has 1 of 4 -> 3 more.
  CHECK(select_to_prune(set, kScores, 0.5, Selection::kPerLayer) ==
        std::vector<int64_t>{1, 5, 9, 11});
  // Already past the target: nothing, never un-pruning.
  CHECK(select_to_prune(set, kScores, 0.2, Selection::kGlobal).empty());
}

TEST_CASE("bad inputs are rejected") {
  const PrunableSet set = two_layers();
  CHECK_THROWS_AS(select_to_prune(set, std::vector<double>(11, 0.0), 0.5, Selection::kGlobal),
                  UsageError);
  std::vector<double> nan = kScores;
  nan[3] = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(select_to_prune(set, nan, 0.5, Selection::kGlobal), UsageError);
  CHECK_THROWS_AS(select_to_prune(set, kScores, 2.0, Selection::kGlobal), UsageError);
  // A NaN on a weight that is already pruned does not matter.
  const PrunableSet masked = two_layers({1, 1, 1, 0, 1});
  CHECK(select_to_prune(masked, nan, 0.25, Selection::kGlobal) == std::vector<int64_t>{1, 7});
}
