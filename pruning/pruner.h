// The Pruner interface (pruning/README.md, "Other pruners"): a pruner is only its
// statistic and its update. Everything else (gradient collection, selection,
// masks, reporting) is shared and lives in prune_step.h.
//
//   prepare(set, grads, fisher)  ingredients of ρ at the current weights
//   scores(set)                  ρ_q for every flat index; low = pruned first
//   update(set, prune)           change w for removing `prune`, zero those
//                                weights, predict the loss increase
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fisher_gradients.h"
#include "fisher_options.h"
#include "prunable_set.h"

namespace spruce::pruning {

/// Predicted loss increase of one update, per layer of the set ([size()]);
/// NaN for a pruner without a loss model (magnitude).
struct LossPrediction {
  /// The pruner's own estimate (exact OBS: ½ w_Qᵀ([F⁻¹]_QQ)⁻¹w_Q; summed
  /// OBS and diagonal Fisher: Σ ρ_q).
  std::vector<double> predicted;
  /// ½ δᵀFδ of the change actually applied, under the pruner's Fisher model
  /// (block F for WoodFisher, diagonal F for diagonal Fisher).
  std::vector<double> quadratic;
};

class Pruner {
 public:
  virtual ~Pruner() = default;
  virtual std::string name() const = 0;
  /// Whether prepare() needs gradients.
  virtual bool needs_fisher() const = 0;
  /// Computes what scores() and update() need, at the set's current weights
  /// and masks. grads: [m, d], may be null when !needs_fisher(); a pruner may
  /// keep the pointer until update(), so the bank must outlive that call.
  virtual void prepare(const PrunableSet& set, const GradientBank* grads,
                       const FisherOptions& fisher) = 0;
  /// ρ for every flat index. [d]
  virtual std::vector<double> scores(const PrunableSet& set) const = 0;
  /// Updates the weights for pruning the flat indices `prune` (ascending,
  /// unpruned), leaving those exactly zero. Masks are the caller's.
  virtual LossPrediction update(PrunableSet& set, std::span<const int64_t> prune) = 0;
};

}  // namespace spruce::pruning
