// WoodFisher pruning (Singh & Alistarh 2020; pruning/README.md, "Statistic" and
// "Weight update (OBS)"): the block-diagonal inverse of the damped empirical
// Fisher (woodbury.h), the statistic
//   ρ_q = w_q² / (2 [F⁻¹]_qq),
// the loss increase of removing w_q while the rest of its block re-optimises,
// and an OBS update of the surviving weights of each block (obs_update.h):
// exact for the whole pruned set, or the reference's summed single-weight
// updates (scale 0: no update, OBD-like).
//
// Gradient entries of already-pruned weights are taken as zero (as the
// reference masks them), so those weights decouple from the rest of F and
// the update never moves them.
#pragma once

#include "obs_update.h"
#include "pruner.h"
#include "woodbury.h"

namespace spruce::pruning {

enum class ObsUpdate { Exact, Summed };

struct WoodFisherOptions {
  ObsUpdate update = ObsUpdate::Exact;
  double summed_scale = 1.0;                   // Summed only; 0 = zeroing only
  InverseMethod method = InverseMethod::Auto;  // how each block is inverted
  int64_t chunk = 32;                          // k for InverseMethod::Recursion
};

class WoodFisherPruner : public Pruner {
 public:
  explicit WoodFisherPruner(WoodFisherOptions options = {}) : options_(options) {}
  std::string name() const override { return "woodfisher"; }
  bool needs_fisher() const override { return true; }
  void prepare(const PrunableSet& set, const GradientBank* grads,
               const FisherOptions& fisher) override;
  std::vector<double> scores(const PrunableSet& set) const override;
  LossPrediction update(PrunableSet& set, std::span<const int64_t> prune) override;

  /// The block inverse computed by the last prepare().
  const BlockInverse& inverse() const { return inverse_; }
  const WoodFisherOptions& options() const { return options_; }

 private:
  void check_prepared(const PrunableSet& set) const;

  WoodFisherOptions options_;
  FisherOptions fisher_;
  const GradientBank* grads_ = nullptr;
  BlockInverse inverse_;
  std::vector<float> mask_;  // masks at prepare() [d]
};

}  // namespace spruce::pruning
