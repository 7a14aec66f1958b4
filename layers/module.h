// Module: the base of every layer and model.
//
// A module owns named parameters (trainable leaves), named buffers (state that
// is saved but not trained: batch-norm running statistics) and named children.
// Everything is addressed by PyTorch-style dotted names built from the
// registration names ("layer1.0.conv1.weight", "layer2.0.shortcut.1.running_mean"),
// in registration order: a module's own parameters and buffers first, then its
// children, depth first. With the same architecture and names as a PyTorch
// model, `state_dict()` has exactly PyTorch's keys, so checkpoints and .npz
// files map onto a PyTorch state_dict.
//
// Pruning hooks live here, not in the layers. A parameter registered as
// prunable (conv and linear weights) can carry a 0/1 mask:
//   - `prunable_parameter_names()` lists them (optionally filtered by glob patterns);
//   - `set_mask(name, mask)` attaches a mask, stored as the buffer "<name>_mask"
//     next to the weight (PyTorch's torch.nn.utils.prune naming), so it is part
//     of `named_buffers()` and `state_dict()` and checkpoints carry it;
//   - layers read their weights through `masked_parameter()`, which returns
//     ops::mul_mask(weight, mask) when a mask exists: pruned weights contribute
//     nothing and receive a zero gradient; in inference (grad mode off) the
//     product is kept until the weight or the mask changes, so kernels that
//     cache per weight storage (packed weights) are not handed a new one each call;
//   - `apply_masks()` zeroes the masked weights; call it after every optimizer
//     step (the post-step hook), so pruned weights stay exactly zero.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.h"
#include "../core/tensor.h"

namespace spruce {

/// Ordered (dotted name, tensor) pairs: named parameters, buffers, state dicts.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Whether a parameter may be pruned: conv and linear weights yes; biases and
/// batch-norm parameters never.
enum class Prunable { kNo, kYes };

/// Whether a strict load_state_dict may miss a buffer (it then keeps its
/// value): batch norm's num_batches_tracked, which PyTorch also accepts
/// missing from older checkpoints.
enum class IfMissing { kFail, kKeep };

/// Whether a conv or linear layer has a bias (named at call sites, not a bare bool).
enum class Bias { kNo, kYes };

/// Glob match of a whole name: '*' matches any run of characters (dots
/// included), '?' exactly one; everything else matches itself.
/// glob_match("layer*.*.conv*.weight", "layer2.1.conv1.weight") is true.
bool glob_match(std::string_view pattern, std::string_view name);

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The computation; shapes are documented by each layer and model.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- structure ----
  /// Every parameter, depth first, in registration order, with dotted names.
  /// The tensors are handles on the module's own storage (not copies).
  NamedTensors named_parameters() const;
  /// The parameters alone, in the same order (what an optimizer steps).
  std::vector<Tensor> parameters() const;
  /// Every buffer (running statistics, counters, masks), depth first.
  NamedTensors named_buffers() const;
  /// Direct children in registration order.
  std::vector<std::pair<std::string, Module*>> named_children() const;
  /// Total number of parameter elements.
  int64_t num_parameters() const;
  /// The parameter or buffer with this dotted name; throws UsageError
  /// naming the key when there is none.
  Tensor parameter(const std::string& name) const;
  Tensor buffer(const std::string& name) const;
  /// The descendant module at a dotted path ("layer1.0"); throws when missing.
  Module& submodule(const std::string& path);

  // ---- mode ----
  /// Sets training mode on this module and every descendant (batch norm uses
  /// batch statistics in training mode, running statistics in eval mode).
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Drops every parameter's gradient (the next backward re-creates them).
  void zero_grad();

  // ---- state ----
  /// Parameters and buffers (masks included), module by module: own
  /// parameters, own buffers, own masks, then children. Values alias the
  /// module's storage; clone them for a snapshot.
  NamedTensors state_dict() const;
  /// Copies values into this module's tensors. A "<param>_mask" key for a
  /// prunable parameter without a mask attaches that mask. Everything is
  /// checked before anything is copied; a missing key (except buffers
  /// registered with IfMissing::kKeep), an unexpected key (both only when
  /// `strict`), a shape mismatch or a non-0/1 mask throws spruce::FormatError
  /// naming the key (and, for shapes, the expected and the given shape).
  void load_state_dict(const NamedTensors& state, bool strict = true);

  // ---- pruning hooks ----
  /// Dotted names of the prunable parameters, in order; with patterns, only
  /// those matching at least one glob pattern (see glob_match).
  std::vector<std::string> prunable_parameter_names() const;
  std::vector<std::string> prunable_parameter_names(const std::vector<std::string>& patterns) const;
  /// Attaches (or replaces) the mask of a prunable parameter: same shape,
  /// values exactly 0 or 1, copied. The weight itself is not changed until
  /// apply_masks(); the forward already uses weight * mask.
  void set_mask(const std::string& param_name, const Tensor& mask);
  bool has_mask(const std::string& param_name) const;
  /// The mask (a handle on the buffer) or an undefined tensor.
  Tensor mask(const std::string& param_name) const;
  void remove_mask(const std::string& param_name);
  /// Every mask keyed by its parameter's dotted name ("conv1.weight").
  NamedTensors named_masks() const;
  /// weight *= mask for every masked parameter (the post-optimizer-step hook).
  void apply_masks();

 protected:
  /// Registers a trainable leaf (requires_grad is set) and returns its handle.
  /// Names are unique within a module, contain no '.' and do not end in "_mask".
  Tensor register_parameter(std::string name, Tensor value, Prunable prunable = Prunable::kNo);
  /// Registers state that is saved and loaded but not trained.
  Tensor register_buffer(std::string name, Tensor value, IfMissing if_missing = IfMissing::kFail);
  /// Adopts a child module and returns a reference to it.
  template <class M>
  M& register_module(std::string name, std::unique_ptr<M> module) {
    M& ref = *module;
    add_child(std::move(name), std::move(module));
    return ref;
  }
  /// The parameter `name` of this module as the forward must use it:
  /// ops::mul_mask(weight, mask) when masked, the weight itself otherwise.
  Tensor masked_parameter(std::string_view name) const;

 private:
  struct Param {
    std::string name;
    Tensor value;
    Prunable prunable;
    Tensor mask;  // undefined when not masked
    // weight * mask for inference, and the contents it was made from.
    mutable Tensor masked;
    mutable ContentVersion masked_value, masked_mask;
  };
  struct Buffer {
    std::string name;
    Tensor value;
    IfMissing if_missing;
  };
  struct Child {
    std::string name;
    std::unique_ptr<Module> module;
  };

  void add_child(std::string name, std::unique_ptr<Module> module);
  void check_new_name(const std::string& name) const;
  /// The module owning a dotted name and the last component.
  std::pair<const Module*, std::string> resolve(const std::string& dotted) const;
  const Param* find_param(std::string_view local) const;
  Param& param_slot(const std::string& dotted, const char* what);
  void collect_parameters(const std::string& prefix, NamedTensors& out) const;
  void collect_buffers(const std::string& prefix, NamedTensors& out) const;
  void collect_state(const std::string& prefix, NamedTensors& out) const;
  void collect_masks(const std::string& prefix, NamedTensors& out) const;
  void collect_may_be_missing(const std::string& prefix, std::set<std::string>& out) const;
  void collect_prunable(const std::string& prefix, std::vector<std::string>& out) const;

  std::vector<Param> params_;
  std::vector<Buffer> buffers_;
  std::vector<Child> children_;
  bool training_ = true;
};

}  // namespace spruce
