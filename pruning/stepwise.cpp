// k-step pruning with the Fisher recomputed in between.
#include "stepwise.h"

#include <chrono>
#include <string>

#include "../core/error.h"

namespace spruce::pruning {

PruneStepOptions step_options(const PruningMethod& method, const FisherOptions& fisher,
                              double sparsity) {
  PruneStepOptions o;
  o.sparsity = sparsity;
  o.selection = method.selection;
  o.target = method.target;
  o.fisher = fisher;
  return o;
}

int64_t fisher_rows(const FisherOptions& fisher, const Communicator* comm) {
  if (!comm) return fisher.samples;
  const auto [first, last] = shard(fisher.samples, comm->rank(), comm->size());
  return last - first;
}

std::vector<SubStep> prune_in_steps(Module& model, PrunableSet& set, Pruner& pruner,
                                    const PruningMethod& method, const FisherOptions& fisher,
                                    double sparsity, int64_t steps, const BatchSource& batches,
                                    const CollectProgress& progress, Communicator* comm) {
  if (steps < 1)
    throw UsageError("pruning in steps: " + std::to_string(steps) + " steps (expected >= 1)");
  std::vector<SubStep> results;
  const double start = pruned_fraction(set, method.target);
  const int64_t rows = fisher_rows(fisher, comm);
  for (int64_t k = 1; k <= steps; ++k) {
    SubStep r;
    GradientBank bank(set.numel());
    if (pruner.needs_fisher()) {
      const auto t0 = std::chrono::steady_clock::now();
      bank = GradientBank(set.numel(), rows);
      collect_fisher_gradients(model, set, rows, batches, bank, [&](int64_t i) {
        if (progress) progress(i, rows);
      });
      r.collect_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const double target = k == steps ? sparsity
                                     : start + (sparsity - start) * static_cast<double>(k) /
                                                   static_cast<double>(steps);
    r.report = prune_step(pruner, set, pruner.needs_fisher() ? &bank : nullptr,
                          step_options(method, fisher, target));
    r.report.total_seconds += r.collect_seconds;
    results.push_back(std::move(r));
  }
  return results;
}

PruneReport combine(const std::vector<SubStep>& steps) {
  if (steps.empty()) return {};
  PruneReport out = steps.back().report;
  out.pruned_before = steps.front().report.pruned_before;
  out.macs_before = steps.front().report.macs_before;
  for (size_t l = 0; l < out.layers.size(); ++l)
    out.layers[l].pruned_before = steps.front().report.layers[l].pruned_before;
  if (steps.size() == 1) return out;
  out.predicted_loss = out.quadratic_loss = out.inverse_seconds = out.update_seconds =
      out.total_seconds = 0;
  for (auto& l : out.layers) l.predicted_loss = l.quadratic_loss = 0;
  for (const auto& s : steps) {
    out.predicted_loss += s.report.predicted_loss;
    out.quadratic_loss += s.report.quadratic_loss;
    out.inverse_seconds += s.report.inverse_seconds;
    out.update_seconds += s.report.update_seconds;
    out.total_seconds += s.report.total_seconds;
    for (size_t l = 0; l < out.layers.size(); ++l) {
      out.layers[l].predicted_loss += s.report.layers[l].predicted_loss;
      out.layers[l].quadratic_loss += s.report.layers[l].quadratic_loss;
    }
  }
  return out;
}

double collect_seconds(const std::vector<SubStep>& steps) {
  double s = 0;
  for (const auto& r : steps) s += r.collect_seconds;
  return s;
}

}  // namespace spruce::pruning
