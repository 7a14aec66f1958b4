// Which weights to prune next (pruning/README.md, "Selection"): the ones with the
// smallest statistic ρ among those still unpruned, until a target sparsity is
// reached, counting weights pruned before.
//
//   Global    one threshold over all d weights: round(s·d) pruned in total,
//             layer sparsities come out of ρ.
//   PerLayer  each layer l on its own: round(s·d_l) pruned in layer l.
//
// Ties in ρ are broken by flat index (lower index pruned first), so the
// choice is deterministic. Pruned weights stay pruned: if a layer (or the
// whole set) is already past the target, nothing more is pruned there.
//
// Rounding at the edges: a target below 1 that rounds to every weight of
// the set (Global) or of a layer (PerLayer) keeps one weight, the one with
// the highest ρ, since a layer without weights cuts the network; a target
// above 0 that rounds to no weight prunes none. Both warn() (core/warning.h)
// naming the layers. A sparsity of exactly 1 prunes everything, silently.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.h"
#include "prunable_set.h"

namespace spruce::pruning {

enum class Selection { kGlobal, kPerLayer };

/// round(sparsity · n), half away from zero. sparsity in [0, 1].
int64_t target_count(double sparsity, int64_t n);

/// Flat indices to prune now, ascending. scores: [d] (entries of pruned
/// weights are ignored). Throws UsageError on a sparsity outside
/// [0, 1], a size mismatch, or a NaN score of an unpruned weight.
std::vector<int64_t> select_to_prune(const PrunableSet& set, std::span<const double> scores,
                                     double sparsity, Selection mode);

}  // namespace spruce::pruning
