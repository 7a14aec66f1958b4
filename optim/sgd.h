// Stochastic gradient descent with momentum, Nesterov and L2 weight decay,
// computing exactly what PyTorch's torch.optim.SGD computes, per parameter:
//
//   g = grad + weight_decay * w                       (L2 added to the gradient)
//   buf = g                       on the first step   (velocity created lazily)
//   buf = momentum * buf + (1 - dampening) * g        afterwards
//   g = nesterov ? g + momentum * buf : buf           (when momentum != 0)
//   w = w - lr * g
//
// The optimizer sees parameters as (name, Tensor) pairs, the shape of
// Module::named_parameters(); the handles alias the model's tensors, so a
// step updates the model in place. A parameter whose gradient is undefined
// (never reached by backward, or dropped by zero_grad) is skipped and its
// velocity left untouched, as in PyTorch.
//
// Masks: set_masks() gives the optimizer 0/1 masks of some parameters (any
// tensors of the parameter's numel, e.g. the model's mask buffers, which it
// keeps as handles, so masks changed later are seen). After every step, and
// on apply_masks(), every masked entry of a weight and of its velocity is set
// to exactly +0, so a pruned weight never comes back and carries no
// momentum. The optimizer knows nothing about how masks are chosen.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace spruce::optim {

/// An ordered list of named tensors (what Module::named_parameters() returns).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Hyper-parameters, with PyTorch's meaning and defaults (lr has none there).
struct SgdOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
};

class Sgd {
 public:
  /// Called after every step() with the optimizer (e.g. to re-apply masks).
  using PostStepHook = std::function<void(Sgd&)>;

  /// Throws UsageError for negative lr, momentum or weight decay, Nesterov
  /// without momentum or with dampening (as PyTorch does), an undefined
  /// parameter or a duplicate name.
  Sgd(NamedTensors params, SgdOptions options);

  /// One update of every parameter that has a gradient, then the hooks.
  void step();
  /// Drops every parameter's gradient (the next backward re-creates it).
  void zero_grad();

  double lr() const { return options_.lr; }
  /// Sets the learning rate for the next steps (schedules call this).
  void set_lr(double lr);
  const SgdOptions& options() const { return options_; }
  const NamedTensors& params() const { return params_; }
  /// Number of step() calls so far (restored by load_state).
  int64_t steps() const { return steps_; }

  /// The velocity buffer of parameter `name`, aliasing the optimizer's
  /// storage (so zeroing entries in it zeroes the momentum); undefined until
  /// the parameter's first step with a gradient, or when momentum is 0.
  /// Throws UsageError for an unknown name.
  Tensor velocity(const std::string& name) const;

  /// The velocity buffers that exist, in parameter order, named by their
  /// parameters; the tensors alias the optimizer's storage.
  NamedTensors state() const;
  /// Replaces the velocity buffers with copies of `state` (as returned by
  /// state(), e.g. read back from a checkpoint) and sets the step count.
  /// Parameters absent from `state` get no buffer (their next step starts
  /// one). Throws FormatError naming `source` for an unknown name or a shape
  /// that does not match its parameter.
  void load_state(const NamedTensors& state, int64_t steps = 0,
                  const std::string& source = "optimizer state");

  /// Registers a hook run after every step, in registration order.
  void add_post_step_hook(PostStepHook hook);

  /// Replaces the masks, keyed by parameter name (what Module::named_masks()
  /// returns). Throws UsageError for an unknown name or a numel that differs
  /// from the parameter's. An empty list removes every mask.
  void set_masks(const NamedTensors& masks);
  /// Sets every masked weight and velocity entry to +0 now (step() does it
  /// after each update; call it after changing a mask between steps).
  void apply_masks();
  /// Drops every velocity buffer: the next step starts momentum afresh, as a
  /// new optimizer would (PyTorch's buffer starts as the first gradient).
  void reset_momentum();

 private:
  size_t index_of(const std::string& name) const;

  NamedTensors params_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<Tensor> velocity_;  // one per parameter, undefined until created
  std::vector<Tensor> masks_;     // one per parameter, undefined when not masked
  SgdOptions options_;
  int64_t steps_ = 0;
  std::vector<PostStepHook> hooks_;
};

}  // namespace spruce::optim
