// GradualPruner: a schedule, a pruner and the masks of one model.
#include "gradual_pruner.h"

#include "../core/error.h"

namespace spruce::pruning {

GradualPruner::GradualPruner(Module& model, const std::vector<std::string>& patterns,
                             GradualPruningOptions options, Communicator* comm)
    : model_(model), options_(std::move(options)), comm_(comm) {
  options_.schedule.validate();
  if (!(options_.lr_factor > 0))
    throw UsageError("gradual pruning: LR factor " + std::to_string(options_.lr_factor) +
                     " (expected > 0)");
  if (options_.sub_steps < 1)
    throw UsageError("gradual pruning: " + std::to_string(options_.sub_steps) +
                     " sub-steps (expected >= 1)");
  if (options_.method.target == Target::kFlops && options_.sample_shape.empty())
    throw UsageError("gradual pruning: a FLOP target (" + options_.method.name() +
                     ") needs the sample shape");
  pruner_ = make_pruner(options_.method, comm_);
  set_ = attach_masks(model_, patterns);
  if (!options_.sample_shape.empty()) attach_flop_costs(model_, set_, options_.sample_shape);
}

GradualStep GradualPruner::prune(int64_t t, const BatchSource& fisher_batches,
                                 const CollectProgress& progress) {
  if (!is_step(t))
    throw UsageError("gradual pruning: " + std::to_string(t) + " is not a step of the schedule");
  if (pruner_->needs_fisher() && !fisher_batches)
    throw UsageError("gradual pruning: " + pruner_->name() + " needs a source of Fisher batches");
  GradualStep step;
  step.t = t;
  step.target = target(t);
  step.sub_steps = prune_in_steps(model_, set_, *pruner_, options_.method, options_.fisher,
                                  step.target, options_.sub_steps, fisher_batches, progress, comm_);
  step.report = combine(step.sub_steps);
  step.collect_seconds = collect_seconds(step.sub_steps);
  return step;
}

double GradualPruner::sparsity() const {
  return set_.numel() > 0
             ? static_cast<double>(set_.pruned_count()) / static_cast<double>(set_.numel())
             : 0.0;
}

}  // namespace spruce::pruning
