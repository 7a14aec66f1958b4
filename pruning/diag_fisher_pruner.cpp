// Diagonal Fisher pruning.
#include "diag_fisher_pruner.h"

#include <string>

#include "../core/error.h"
#include "../core/parallel.h"

namespace spruce::pruning {
namespace {

void check_prepared(const std::vector<double>& diag, const PrunableSet& set) {
  if (static_cast<int64_t>(diag.size()) != set.numel())
    throw UsageError("diag_fisher: prepare() was not called for a set of " +
                     std::to_string(set.numel()) + " weights");
}

}  // namespace

void DiagFisherPruner::prepare(const PrunableSet& set, const GradientBank* grads,
                               const FisherOptions& fisher) {
  if (grads == nullptr || grads->dim() != set.numel())
    throw UsageError("diag_fisher: needs gradients of length " + std::to_string(set.numel()));
  if (!(fisher.damp > 0.0))
    throw UsageError("diag_fisher: damping λ = " + std::to_string(fisher.damp) + ", expected > 0");
  check_finite_gradients(*grads, set, "diag_fisher");
  const int64_t d = grads->dim();
  int64_t m = grads->rows();
  diag_.assign(static_cast<size_t>(d), 0.0);
  // Columns split over threads; rows summed in order, so the bits do not depend on the split.
  parallel_for(0, d, 4096, [&](int64_t q0, int64_t q1) {
    for (int64_t s = 0; s < m; ++s) {
      const float* g = grads->data() + s * d;
      for (int64_t q = q0; q < q1; ++q) diag_[q] += static_cast<double>(g[q]) * g[q];
    }
  });
  if (comm_ != nullptr && comm_->size() > 1) {
    comm_->allreduce_sum(std::span<double>(diag_));
    m = 0;
    for (int64_t rows : comm_->allgather(grads->rows())) m += rows;
  }
  for (double& f : diag_) f = fisher.damp + (m > 0 ? f / m : 0.0);
}

std::vector<double> DiagFisherPruner::scores(const PrunableSet& set) const {
  check_prepared(diag_, set);
  const std::vector<float> w = set.flat_weights();
  std::vector<double> rho(w.size());
  for (size_t q = 0; q < w.size(); ++q) rho[q] = 0.5 * static_cast<double>(w[q]) * w[q] * diag_[q];
  return rho;
}

LossPrediction DiagFisherPruner::update(PrunableSet& set, std::span<const int64_t> prune) {
  check_prepared(diag_, set);
  std::vector<float> w = set.flat_weights();
  std::vector<double> loss(static_cast<size_t>(set.size()), 0.0);
  for (int64_t q : prune) {
    const float wq = w.at(static_cast<size_t>(q));
    loss[set.layer_of(q)] += 0.5 * static_cast<double>(wq) * wq * diag_[q];
    w[q] = 0.f;
  }
  set.set_flat_weights(w);
  return {loss, loss};  // zeroing is the whole change, so the model's two numbers agree
}

}  // namespace spruce::pruning
