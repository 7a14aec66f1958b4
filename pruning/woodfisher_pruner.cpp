// WoodFisher pruning: the block inverse, ρ and the OBS update wired together.
#include "woodfisher_pruner.h"

#include <stdexcept>
#include <string>

namespace spruce::pruning {

void WoodFisherPruner::prepare(const PrunableSet& set, const GradientBank* grads,
                               const FisherOptions& fisher) {
  if (grads == nullptr || grads->dim() != set.numel())
    throw std::invalid_argument("woodfisher: needs gradients of length " +
                                std::to_string(set.numel()));
  fisher_ = fisher;
  grads_ = grads;
  mask_ = set.flat_mask();
  inverse_ = block_fisher_inverse(*grads, make_blocks(set.layer_sizes(), fisher.block_size),
                                  {fisher.damp, options_.method, options_.chunk}, mask_);
}

void WoodFisherPruner::check_prepared(const PrunableSet& set) const {
  if (grads_ == nullptr || inverse_.dim() != set.numel())
    throw std::logic_error("woodfisher: prepare() was not called for a set of " +
                           std::to_string(set.numel()) + " weights");
}

std::vector<double> WoodFisherPruner::scores(const PrunableSet& set) const {
  check_prepared(set);
  const std::vector<float> w = set.flat_weights();
  const std::vector<float>& diag = inverse_.diagonal();
  std::vector<double> rho(w.size());
  for (size_t q = 0; q < w.size(); ++q) rho[q] = static_cast<double>(w[q]) * w[q] / (2.0 * diag[q]);
  return rho;
}

LossPrediction WoodFisherPruner::update(PrunableSet& set, std::span<const int64_t> prune) {
  check_prepared(set);
  const std::vector<float> before = set.flat_weights();
  std::vector<float> w = before;
  LossPrediction out{std::vector<double>(static_cast<size_t>(set.size()), 0.0),
                     std::vector<double>(static_cast<size_t>(set.size()), 0.0)};
  if (options_.update == ObsUpdate::Exact)
    obs_update_exact(w, inverse_, prune, out.predicted);
  else
    obs_update_summed(w, inverse_, prune, options_.summed_scale, out.predicted);
  set.set_flat_weights(w);
  fisher_quadratic(before, w, *grads_, inverse_.blocks(), fisher_.damp, mask_, out.quadratic);
  return out;
}

}  // namespace spruce::pruning
