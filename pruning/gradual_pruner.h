// Gradual pruning during training, as an object a user's own training loop
// calls (Zhu & Gupta's cubic schedule, pruning/schedule.h, with any pruner):
//
//   pruning::GradualPruner pruner(model, {"*"}, options);   // attaches masks
//   optim::Sgd opt(model.named_parameters(), sgd_options);
//   opt.set_masks(model.named_masks());    // pruned weights and momentum stay 0
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     if (pruner.is_step(epoch)) {
//       pruner.prune(epoch, next_fisher_batch);   // to the schedule's target
//       opt.apply_masks();                        // momentum of the pruned weights: 0 now
//       if (options.reset_momentum) opt.reset_momentum();
//     }
//     opt.set_lr(base_lr * pruner.lr_factor(epoch, epoch + 1));
//     ... the usual loop: forward, backward, opt.step() ...
//   }
//
// Time t is whatever the loop counts (epochs or optimizer steps). At a
// pruning step the pruner collects options.fisher.samples gradients from the
// batch source at the current weights (model in eval mode; its mode is
// restored), prunes to target(t) in options.sub_steps sub-steps
// (pruning/stepwise.h) and updates the masks, which live in the model.
//
// pruning/ does not depend on optim/, so keeping the pruned weights' momentum
// at zero is the optimizer's generic mask mechanism (optim::Sgd::set_masks),
// given the model's masks once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../layers/module.h"
#include "fisher_options.h"
#include "flop_cost.h"
#include "model_pruning.h"
#include "prunable_set.h"
#include "pruner.h"
#include "pruner_registry.h"
#include "schedule.h"
#include "stepwise.h"

namespace spruce::pruning {

struct GradualPruningOptions {
  PruningMethod method;      // pruner, selection, update
  GradualSchedule schedule;  // when, and to which sparsity
  FisherOptions fisher;      // m, b, λ, c
  int64_t sub_steps = 1;     // k: Fisher recomputed k times within each pruning step
  // Around each step, for the caller's loop to apply (pruning/ does not see
  // the optimizer): drop the momentum right after the step, and scale the
  // learning rate by lr_factor in every epoch that holds a step (lr_factor()).
  bool reset_momentum = false;
  double lr_factor = 1.0;
  // The shape [C, H, W] of one input. When given, the prunable set gets FLOP
  // costs (flop_cost.h) and the reports count multiply-adds; a FLOP target
  // (method.target, "-flops") requires it.
  Shape sample_shape;
};

/// What one pruning step did.
struct GradualStep {
  int64_t t = 0;
  double target = 0;
  PruneReport report;          // combine(sub_steps): sparsity, layers, predicted loss, times
  double collect_seconds = 0;  // gathering gradients, over all sub-steps
  std::vector<SubStep> sub_steps;
};

class GradualPruner {
 public:
  /// Attaches masks to the weights of `model` that match `patterns`
  /// (model_pruning.h) and validates the options (UsageError when not valid).
  /// The model must outlive the pruner. With a communicator of several
  /// ranks, every rank calls prune() at the same t, its batch source giving
  /// its share of the Fisher samples (stepwise.h, fisher_rows), and all end
  /// with the same masks and weights.
  GradualPruner(Module& model, const std::vector<std::string>& patterns,
                GradualPruningOptions options, Communicator* comm = nullptr);

  /// Whether t is one of the schedule's pruning steps.
  bool is_step(int64_t t) const { return options_.schedule.is_step(t); }
  /// The schedule's target sparsity at t.
  double target(int64_t t) const { return options_.schedule.target(t); }
  /// Prunes to target(t) (t must be a pruning step; UsageError otherwise).
  /// fisher_batches gives the Fisher mini-batches; unused by a pruner
  /// without a Fisher (magnitude), so it may be empty then.
  GradualStep prune(int64_t t, const BatchSource& fisher_batches,
                    const CollectProgress& progress = {});

  /// options.lr_factor when a pruning step lies in [begin, end) (e.g. the
  /// epoch's range of t), else 1.
  double lr_factor(int64_t begin, int64_t end) const {
    return options_.schedule.any_step_in(begin, end) ? options_.lr_factor : 1.0;
  }

  /// Whether the pruner collects Fisher gradients.
  bool needs_fisher() const { return pruner_->needs_fisher(); }
  const GradualPruningOptions& options() const { return options_; }
  const PrunableSet& prunable() const { return set_; }
  /// Fraction of the prunable weights pruned now.
  double sparsity() const;

 private:
  Module& model_;
  GradualPruningOptions options_;
  PrunableSet set_;
  Communicator* comm_;
  std::unique_ptr<Pruner> pruner_;
};

}  // namespace spruce::pruning
