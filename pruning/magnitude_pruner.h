// Magnitude pruning: ρ_q = |w_q|, the update only zeroes. It has no loss
// model, so its predicted loss increase is NaN.
#pragma once

#include "pruner.h"

namespace spruce::pruning {

class MagnitudePruner : public Pruner {
 public:
  std::string name() const override { return "magnitude"; }
  bool needs_fisher() const override { return false; }
  void prepare(const PrunableSet&, const GradientBank*, const FisherOptions&) override {}
  std::vector<double> scores(const PrunableSet& set) const override;
  LossPrediction update(PrunableSet& set, std::span<const int64_t> prune) override;
};

}  // namespace spruce::pruning
