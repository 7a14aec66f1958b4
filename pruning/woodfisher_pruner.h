// WoodFisher pruning (Singh & Alistarh 2020; pruning/README.md, "Statistic" and
// "Weight update (OBS)"), and WoodTaylor, its variant with the loss's
// first-order term (pruning/README.md, "WoodTaylor"): the block-diagonal inverse of the damped
// empirical Fisher (woodbury.h), the statistic
//   ρ_q = w_q² / (2 [F⁻¹]_qq),
// the loss increase of removing w_q while the rest of its block re-optimises,
// and an OBS update of the surviving weights of each block (obs_update.h):
// exact for the whole pruned set, or the reference's summed single-weight
// updates (scale 0: no update, OBD-like).
//
// Gradient entries of already-pruned weights are taken as zero (as the
// reference masks them), so those weights decouple from the rest of F and
// the update never moves them.
//
// With a communicator of N > 1 ranks the pruner is distributed
// (distributed_fisher.h): prepare() takes this rank's share of the gradient
// rows, each rank inverts only the blocks it owns, scores() gathers every
// rank's ρ so that all ranks select the same weights, and update() lets the
// owners update their blocks and shares the new weights with every rank.
// Masks equal a single process's, weights agree to float rounding.
#pragma once

#include "../core/communicator.h"
#include "distributed_fisher.h"
#include "obs_update.h"
#include "pruner.h"
#include "woodbury.h"

namespace spruce::pruning {

enum class ObsUpdate { kExact, kSummed };

struct WoodFisherOptions {
  ObsUpdate update = ObsUpdate::kExact;
  /// δ is scaled by this, in [0, 1] (pruned weights are zeroed whatever it
  /// is): 1 the full update, 0 none (summed with 0 is OBD).
  double update_scale = 1.0;
  InverseMethod method = InverseMethod::kAuto;  // how each block is inverted
  int64_t chunk = 32;                           // k for InverseMethod::kRecursion
  /// WoodTaylor (pruning/README.md, "WoodTaylor"): the mean gradient ḡ of
  /// the Fisher's samples adds the first-order term. With a = F⁻¹ḡ (the
  /// Newton step), ρ_q = (w_q − a_q)² / (2 [F⁻¹]_qq) and the update is
  /// −a followed by the OBS update of w − a.
  bool first_order = false;
};

class WoodFisherPruner : public Pruner {
 public:
  /// comm: null or one rank = a single process.
  explicit WoodFisherPruner(WoodFisherOptions options = {}, Communicator* comm = nullptr)
      : options_(options), comm_(comm != nullptr && comm->size() > 1 ? comm : nullptr) {}
  std::string name() const override { return options_.first_order ? "woodtaylor" : "woodfisher"; }
  bool needs_fisher() const override { return true; }
  void prepare(const PrunableSet& set, const GradientBank* grads,
               const FisherOptions& fisher) override;
  std::vector<double> scores(const PrunableSet& set) const override;
  LossPrediction update(PrunableSet& set, std::span<const int64_t> prune) override;

  /// The block inverse computed by the last prepare(): of this rank's
  /// blocks, with indices counted from first_weight(), when distributed.
  const BlockInverse& inverse() const { return inverse_; }
  /// The first flat index inverse() covers (0 in a single process).
  int64_t first_weight() const { return first_; }
  const WoodFisherOptions& options() const { return options_; }

 private:
  void check_prepared(const PrunableSet& set) const;
  void prepare_distributed(const PrunableSet& set, const GradientBank& mine);
  /// WoodTaylor: mean_grad_ and newton_ from the sums of all m gradients
  /// over inverse_'s columns, mask_ and inverse_.
  void compute_newton_step(std::vector<double> column_sums, int64_t m);
  /// WoodTaylor's first-order terms of the change after − before, per block:
  /// −½ ḡ_bᵀa_b (the Newton step's gain) added to predicted, ḡ_bᵀδ_b to quadratic.
  void add_first_order(std::span<const float> before, std::span<const float> after,
                       LossPrediction& out) const;
  /// warn()s about the blocks whose damping block_fisher_inverse raised.
  void warn_raised_damping(const PrunableSet& set) const;

  WoodFisherOptions options_;
  Communicator* comm_ = nullptr;  // null: a single process
  BlockPartition partition_;      // when distributed
  std::vector<Block> blocks_;     // when distributed: every rank's blocks
  int64_t first_ = 0;             // first flat index of inverse_
  FisherOptions fisher_;
  // The caller's bank: all rows, or this rank's rows when distributed (all columns).
  const GradientBank* grads_ = nullptr;
  int64_t total_rows_ = 0;  // m, over every rank
  BlockInverse inverse_;
  std::vector<float> mask_;  // masks at prepare() [d]
  // WoodTaylor only (empty otherwise), over the columns of inverse_: the mean
  // gradient ḡ (zero where masked) and the Newton step a = F⁻¹ḡ.
  std::vector<double> mean_grad_, newton_;
};

}  // namespace spruce::pruning
