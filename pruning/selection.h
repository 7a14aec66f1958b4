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
//
// FLOP target (pruning/README.md, "FLOP-aware pruning"; needs the set's
// costs c_l): s is the fraction of the prunable multiply-adds to remove.
// Global ranks the unpruned weights by ρ_q / c_q (ties: flat index) and
// takes the shortest prefix of that order whose cost, added to the cost
// pruned before, is at least s·Σ_l d_l·c_l; if that prefix would take every
// weight while s < 1, the last one is kept (with a warning). PerLayer is the
// weight-count selection unchanged: within a layer every weight costs the
// same, so a layer's fraction of weights is its fraction of multiply-adds.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.h"
#include "prunable_set.h"

namespace spruce::pruning {

enum class Selection { kGlobal, kPerLayer };
/// What a target sparsity counts: weights, or multiply-adds (FLOPs).
enum class Target { kWeights, kFlops };

/// round(sparsity · n), half away from zero. sparsity in [0, 1].
int64_t target_count(double sparsity, int64_t n);

/// The fraction of the set pruned now, counted as `target` counts: pruned
/// weights / d, or 1 − remaining / dense multiply-adds (needs costs).
double pruned_fraction(const PrunableSet& set, Target target);

/// Flat indices to prune now, ascending. scores: [d] (entries of pruned
/// weights are ignored). Throws UsageError on a sparsity outside
/// [0, 1], a size mismatch, a NaN score of an unpruned weight, or a FLOP
/// target on a set without costs.
std::vector<int64_t> select_to_prune(const PrunableSet& set, std::span<const double> scores,
                                     double sparsity, Selection mode,
                                     Target target = Target::kWeights);

}  // namespace spruce::pruning
