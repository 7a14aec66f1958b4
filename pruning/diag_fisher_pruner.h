// Diagonal Fisher pruning (pruning/README.md, "Other pruners"):
//   F_qq = λ + (1/m) Σ_i g_{i,q}²,   ρ_q = w_q² F_qq / 2,
// the loss increase of zeroing w_q under a diagonal quadratic model. The
// update only zeroes; the predicted increase is Σ ρ_q over the pruned set.
// With a communicator of several ranks, each rank passes its share of the
// gradient rows and the sums are added over ranks.
#pragma once

#include "../core/communicator.h"
#include "pruner.h"

namespace spruce::pruning {

class DiagFisherPruner : public Pruner {
 public:
  /// comm: null or one rank = a single process.
  explicit DiagFisherPruner(Communicator* comm = nullptr) : comm_(comm) {}
  std::string name() const override { return "diag_fisher"; }
  bool needs_fisher() const override { return true; }
  void prepare(const PrunableSet& set, const GradientBank* grads,
               const FisherOptions& fisher) override;
  std::vector<double> scores(const PrunableSet& set) const override;
  LossPrediction update(PrunableSet& set, std::span<const int64_t> prune) override;
  /// F_qq after prepare(). [d]
  const std::vector<double>& fisher_diagonal() const { return diag_; }

 private:
  Communicator* comm_;
  std::vector<double> diag_;
};

}  // namespace spruce::pruning
