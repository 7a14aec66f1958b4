// One pruning step (pruning/README.md, "Selection"), the same for every
// pruner: prepare the statistic, score, select the weights to remove so that
// the target sparsity is met exactly, let the pruner update and zero them,
// then mark them in the masks and re-zero every masked weight. Masks only
// ever lose ones: pruned weights stay pruned.
//
// A gradual schedule or a one-shot prune split into k steps is a sequence of
// prune_step calls with rising targets (and fresh gradients in between).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fisher_gradients.h"
#include "prunable_set.h"
#include "pruner.h"
#include "selection.h"

namespace spruce::pruning {

struct PruneStepOptions {
  double sparsity = 0.5;  // target fraction of pruned weights (or multiply-adds), in [0, 1]
  Selection selection = Selection::kGlobal;
  FisherOptions fisher{};
  /// Skip pruner.prepare(): the caller prepared the pruner on the same
  /// gradients and masks already (one-shot sweeps over several sparsities
  /// from the same dense weights reuse one inverse).
  bool reuse_prepared = false;
  /// kFlops: sparsity counts multiply-adds, weights ranked by ρ/c (needs the
  /// set's costs, flop_cost.h). Last, so positional initialisers keep working.
  Target target = Target::kWeights;
};

struct LayerReport {
  std::string name;
  int64_t size = 0;
  int64_t pruned_before = 0;
  int64_t pruned_after = 0;
  double sparsity = 0.0;        // pruned_after / size
  double predicted_loss = 0.0;  // LossPrediction::predicted of this layer
  double quadratic_loss = 0.0;  // LossPrediction::quadratic of this layer
};

struct PruneReport {
  std::string pruner;
  std::vector<LayerReport> layers;
  int64_t size = 0;
  int64_t pruned_before = 0;
  int64_t pruned_after = 0;
  double sparsity = 0.0;
  double predicted_loss = 0.0;  // sums over layers (NaN for magnitude)
  double quadratic_loss = 0.0;
  // Multiply-adds per image, when the set has FLOP costs (else all 0): of the
  // prunable weights dense, before and after the step; and of the whole
  // model (conv and linear layers, the set's other_macs included).
  int64_t macs_dense = 0;
  int64_t macs_before = 0;
  int64_t macs_after = 0;
  int64_t model_macs_dense = 0;
  int64_t model_macs_after = 0;
  double inverse_seconds = 0.0;  // prepare(): the block inverse, the Fisher diagonal, ...
  double update_seconds = 0.0;   // the pruner's weight update
  double total_seconds = 0.0;
};

/// Prunes `set` to options.sparsity with `pruner`. grads: [m, d], required
/// when pruner.needs_fisher(); it must stay alive for the call.
PruneReport prune_step(Pruner& pruner, PrunableSet& set, const GradientBank* grads,
                       const PruneStepOptions& options);

}  // namespace spruce::pruning
