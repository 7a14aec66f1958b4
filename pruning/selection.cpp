// Selection by partial ordering on (ρ, flat index), a strict total order; the
// FLOP target sorts on (ρ / c, flat index) and walks the order until the cost
// is met.
#include "selection.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "../core/error.h"
#include "../core/warning.h"

namespace spruce::pruning {
namespace {

/// Appends to `out` the `count` candidates with the smallest (score, index).
void smallest(std::vector<int64_t> candidates, std::span<const double> scores, int64_t count,
              std::vector<int64_t>& out) {
  count = std::min<int64_t>(count, static_cast<int64_t>(candidates.size()));
  if (count <= 0) return;
  auto less = [&](int64_t a, int64_t b) {
    return scores[a] < scores[b] || (scores[a] == scores[b] && a < b);
  };
  std::nth_element(candidates.begin(), candidates.begin() + (count - 1), candidates.end(), less);
  out.insert(out.end(), candidates.begin(), candidates.begin() + count);
}

/// The candidates in ascending (score / cost, index) order, just long enough
/// that `removed` (the cost pruned before) plus their cost reaches `target`.
std::vector<int64_t> cheapest_to_target(const PrunableSet& set, std::vector<int64_t> candidates,
                                        std::span<const double> scores, double target,
                                        int64_t removed) {
  std::vector<double> ratio(scores.size());
  for (int64_t q : candidates)
    ratio[q] = scores[q] / static_cast<double>(set.cost(set.layer_of(q)));
  std::sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
    return ratio[a] < ratio[b] || (ratio[a] == ratio[b] && a < b);
  });
  size_t n = 0;
  for (; n < candidates.size() && static_cast<double>(removed) < target; ++n)
    removed += set.cost(set.layer_of(candidates[n]));
  candidates.resize(n);
  return candidates;
}

}  // namespace

double pruned_fraction(const PrunableSet& set, Target target) {
  if (target == Target::kFlops) {
    if (!set.has_costs()) throw UsageError("a FLOP target needs the set's costs (flop_cost.h)");
    const int64_t dense = set.dense_macs();
    return dense > 0 ? 1.0 - static_cast<double>(set.remaining_macs()) / dense : 0.0;
  }
  return set.numel() > 0 ? static_cast<double>(set.pruned_count()) / set.numel() : 0.0;
}

int64_t target_count(double sparsity, int64_t n) {
  if (!(sparsity >= 0.0 && sparsity <= 1.0))
    throw UsageError("target sparsity " + std::to_string(sparsity) + ", expected in [0, 1]");
  return std::llround(sparsity * static_cast<double>(n));
}

std::vector<int64_t> select_to_prune(const PrunableSet& set, std::span<const double> scores,
                                     double sparsity, Selection mode, Target target) {
  if (static_cast<int64_t>(scores.size()) != set.numel())
    throw UsageError("select_to_prune: " + std::to_string(scores.size()) + " scores for " +
                     std::to_string(set.numel()) + " weights");
  target_count(sparsity, 0);
  if (target == Target::kFlops && !set.has_costs())
    throw UsageError("select_to_prune: a FLOP target needs the set's costs (flop_cost.h)");
  const std::vector<float> mask = set.flat_mask();
  // Unpruned flat indices of layers [l0, l1).
  auto candidates = [&](int64_t l0, int64_t l1) {
    std::vector<int64_t> c;
    for (int64_t l = l0; l < l1; ++l) {
      const auto& p = set.param(l);
      for (int64_t q = p.offset; q < p.offset + p.numel(); ++q) {
        if (mask[q] == 0.f) continue;
        if (std::isnan(scores[q]))
          throw UsageError("select_to_prune: score of weight " + std::to_string(q - p.offset) +
                           " of '" + p.name + "' is NaN");
        c.push_back(q);
      }
    }
    return c;
  };
  std::vector<std::string> rounded_to_all, rounded_to_none;  // what the warnings name
  // The target count of n weights, kept below n unless sparsity is 1 (see selection.h).
  auto target_of = [&](int64_t n, const std::string& what) {
    int64_t target = target_count(sparsity, n);
    if (sparsity < 1.0 && n > 0 && target == n) {
      target = n - 1;
      rounded_to_all.push_back(what);
    }
    if (sparsity > 0.0 && n > 0 && target == 0) rounded_to_none.push_back(what);
    return target;
  };
  std::vector<int64_t> chosen;
  if (mode == Selection::kGlobal && target == Target::kFlops) {
    const int64_t dense = set.dense_macs();
    std::vector<int64_t> all = candidates(0, set.size());
    const int64_t unpruned = static_cast<int64_t>(all.size());
    chosen = cheapest_to_target(set, std::move(all), scores, sparsity * static_cast<double>(dense),
                                dense - set.remaining_macs());
    if (sparsity < 1.0 && unpruned > 0 && static_cast<int64_t>(chosen.size()) == unpruned) {
      chosen.pop_back();  // the highest ratio: a set without weights cuts the network
      rounded_to_all.push_back("the set (" + std::to_string(dense) + " multiply-adds)");
    }
  } else if (mode == Selection::kGlobal) {
    const int64_t target =
        target_of(set.numel(), "all " + std::to_string(set.numel()) + " weights");
    smallest(candidates(0, set.size()), scores, target - set.pruned_count(), chosen);
  } else {
    for (int64_t l = 0; l < set.size(); ++l) {
      const auto& p = set.param(l);
      const int64_t target =
          target_of(p.numel(), "'" + p.name + "' (" + std::to_string(p.numel()) + ")");
      smallest(candidates(l, l + 1), scores, target - set.pruned_count(l), chosen);
    }
  }
  auto join = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  char s[32];
  std::snprintf(s, sizeof s, "%g", sparsity);
  if (!rounded_to_all.empty())
    warn(std::string("target sparsity ") + s + " rounds to every weight of " +
         join(rounded_to_all) + "; one weight (the highest score) is kept there");
  if (!rounded_to_none.empty())
    warn(std::string("target sparsity ") + s + " rounds to no weight of " + join(rounded_to_none) +
         "; nothing is pruned there");
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace spruce::pruning
