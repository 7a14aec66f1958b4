// Pruning to a target in k sub-steps with the Fisher recomputed at the
// current weights before each one: the one-shot "--steps k" of the tools, and
// the recompute sub-steps inside each step of a gradual schedule. Sub-step j
// of k prunes to s_0 + (s − s_0)·j/k (s_0 the set's sparsity at the start,
// in weights or, for a FLOP target, in multiply-adds),
// the last one to s exactly; each collects fisher.samples fresh gradients
// from the batch source at the weights the previous sub-step left. k = 1 is
// one prune_step on gradients collected now.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../core/communicator.h"
#include "../layers/module.h"
#include "fisher_options.h"
#include "model_pruning.h"
#include "prunable_set.h"
#include "prune_step.h"
#include "pruner.h"
#include "pruner_registry.h"

namespace spruce::pruning {

/// Called while gradients are collected: (gradients done, gradients in all).
using CollectProgress = std::function<void(int64_t done, int64_t total)>;

/// The options of one prune_step of `method` to `sparsity` with `fisher`:
/// the one place where a method and the Fisher settings become step options.
PruneStepOptions step_options(const PruningMethod& method, const FisherOptions& fisher,
                              double sparsity);

/// The gradient rows this process collects per Fisher: fisher.samples, or
/// with a communicator of several ranks its shard of them
/// (distributed_fisher.h; the batch source then gives this rank's share).
int64_t fisher_rows(const FisherOptions& fisher, const Communicator* comm);

/// One sub-step: its report and the seconds spent collecting its gradients.
struct SubStep {
  PruneReport report;
  double collect_seconds = 0;
};

/// Prunes `set` (masks of `model`) to `sparsity` in `steps` sub-steps.
/// `batches` gives the Fisher mini-batches (of fisher.batch samples each;
/// called fisher_rows(fisher, comm) times per sub-step, never when the
/// pruner needs no Fisher). `pruner` must have been made with the same
/// communicator (make_pruner). Returns one entry per sub-step.
std::vector<SubStep> prune_in_steps(Module& model, PrunableSet& set, Pruner& pruner,
                                    const PruningMethod& method, const FisherOptions& fisher,
                                    double sparsity, int64_t steps, const BatchSource& batches,
                                    const CollectProgress& progress = {},
                                    Communicator* comm = nullptr);

/// The sub-steps as one report: layer sizes and sparsities after the last
/// sub-step, counts (and multiply-adds) before the first, predicted and quadratic loss increases
/// and times summed. collect_seconds is added to total_seconds.
PruneReport combine(const std::vector<SubStep>& steps);
/// Sum of the sub-steps' collect_seconds.
double collect_seconds(const std::vector<SubStep>& steps);

}  // namespace spruce::pruning
