// Magnitude pruning.
#include "magnitude_pruner.h"

#include <cmath>
#include <limits>

namespace spruce::pruning {

std::vector<double> MagnitudePruner::scores(const PrunableSet& set) const {
  const std::vector<float> w = set.flat_weights();
  std::vector<double> rho(w.size());
  for (size_t q = 0; q < w.size(); ++q) rho[q] = std::fabs(static_cast<double>(w[q]));
  return rho;
}

LossPrediction MagnitudePruner::update(PrunableSet& set, std::span<const int64_t> prune) {
  std::vector<float> w = set.flat_weights();
  for (int64_t q : prune) w.at(static_cast<size_t>(q)) = 0.f;
  set.set_flat_weights(w);
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  return {std::vector<double>(static_cast<size_t>(set.size()), nan),
          std::vector<double>(static_cast<size_t>(set.size()), nan)};
}

}  // namespace spruce::pruning
