// Selection by partial ordering on (ρ, flat index), a strict total order.
#include "selection.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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

}  // namespace

int64_t target_count(double sparsity, int64_t n) {
  if (!(sparsity >= 0.0 && sparsity <= 1.0))
    throw std::invalid_argument("target sparsity " + std::to_string(sparsity) +
                                ", expected in [0, 1]");
  return std::llround(sparsity * static_cast<double>(n));
}

std::vector<int64_t> select_to_prune(const PrunableSet& set, std::span<const double> scores,
                                     double sparsity, Selection mode) {
  if (static_cast<int64_t>(scores.size()) != set.numel())
    throw std::invalid_argument("select_to_prune: " + std::to_string(scores.size()) +
                                " scores for " + std::to_string(set.numel()) + " weights");
  target_count(sparsity, 0);
  const std::vector<float> mask = set.flat_mask();
  // Unpruned flat indices of layers [l0, l1).
  auto candidates = [&](int64_t l0, int64_t l1) {
    std::vector<int64_t> c;
    for (int64_t l = l0; l < l1; ++l) {
      const auto& p = set.param(l);
      for (int64_t q = p.offset; q < p.offset + p.numel(); ++q) {
        if (mask[q] == 0.f) continue;
        if (std::isnan(scores[q]))
          throw std::invalid_argument("select_to_prune: score of weight " +
                                      std::to_string(q - p.offset) + " of '" + p.name + "' is NaN");
        c.push_back(q);
      }
    }
    return c;
  };
  std::vector<int64_t> chosen;
  if (mode == Selection::Global) {
    const int64_t target = target_count(sparsity, set.numel());
    smallest(candidates(0, set.size()), scores, target - set.pruned_count(), chosen);
  } else {
    for (int64_t l = 0; l < set.size(); ++l) {
      const int64_t target = target_count(sparsity, set.param(l).numel());
      smallest(candidates(l, l + 1), scores, target - set.pruned_count(l), chosen);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace spruce::pruning
