// prune_step: the shared part of every pruner.
#include "prune_step.h"

#include <chrono>

#include "../core/error.h"

namespace spruce::pruning {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PruneReport prune_step(Pruner& pruner, PrunableSet& set, const GradientBank* grads,
                       const PruneStepOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  target_count(options.sparsity, 0);  // validates before any work
  if (pruner.needs_fisher() && grads == nullptr)
    throw UsageError("prune_step: pruner '" + pruner.name() + "' needs Fisher gradients");
  PruneReport report;
  report.pruner = pruner.name();
  for (int64_t l = 0; l < set.size(); ++l)
    report.layers.push_back({set.param(l).name, set.param(l).numel(), set.pruned_count(l)});
  report.macs_dense = set.dense_macs();
  report.macs_before = set.remaining_macs();

  const auto t_prepare = std::chrono::steady_clock::now();
  if (!options.reuse_prepared) pruner.prepare(set, grads, options.fisher);
  report.inverse_seconds = seconds_since(t_prepare);

  const std::vector<double> rho = pruner.scores(set);
  const std::vector<int64_t> prune =
      select_to_prune(set, rho, options.sparsity, options.selection, options.target);

  const auto t_update = std::chrono::steady_clock::now();
  const LossPrediction loss = pruner.update(set, prune);
  report.update_seconds = seconds_since(t_update);

  set.prune(prune);
  set.apply_masks();

  for (int64_t l = 0; l < set.size(); ++l) {
    LayerReport& r = report.layers[static_cast<size_t>(l)];
    r.pruned_after = set.pruned_count(l);
    r.sparsity = r.size > 0 ? static_cast<double>(r.pruned_after) / r.size : 0.0;
    r.predicted_loss = loss.predicted[static_cast<size_t>(l)];
    r.quadratic_loss = loss.quadratic[static_cast<size_t>(l)];
    report.size += r.size;
    report.pruned_before += r.pruned_before;
    report.pruned_after += r.pruned_after;
    report.predicted_loss += r.predicted_loss;
    report.quadratic_loss += r.quadratic_loss;
  }
  report.sparsity = report.size > 0 ? static_cast<double>(report.pruned_after) / report.size : 0.0;
  report.macs_after = set.remaining_macs();
  if (set.has_costs()) {
    report.model_macs_dense = set.other_macs() + report.macs_dense;
    report.model_macs_after = set.other_macs() + report.macs_after;
  }
  report.total_seconds = seconds_since(t0);
  return report;
}

}  // namespace spruce::pruning
