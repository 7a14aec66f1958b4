// The prunable weights of a model as one vector w in R^d (pruning/README.md,
// "Prunable weights"): an ordered list of named weights, each with a 0/1 mask
// of the same number of elements, laid out back to back. Layer l occupies the
// flat indices [offset_l, offset_l + numel_l) of w, in the order of add().
//
// The set holds tensor handles, so it reads and writes the model's own
// weights and masks: nothing is copied. It depends on core only; connecting
// it to a model's named parameters happens elsewhere, and so does measuring
// the optional FLOP costs it can carry (flop_cost.h; pruning/README.md,
// "FLOP-aware pruning").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../core/tensor.h"

namespace spruce::pruning {

/// One prunable weight (a conv or linear `weight`, any shape, contiguous).
struct PrunableParam {
  std::string name;
  Tensor weight;       // the parameter itself; its .grad() feeds GradientBank
  Tensor mask;         // same numel; 1 = kept, 0 = pruned
  int64_t offset = 0;  // first index in the concatenated w
  int64_t numel() const { return weight.numel(); }
};

class PrunableSet {
 public:
  /// Appends a weight. An undefined mask becomes a new all-ones mask; a given
  /// mask must have the weight's numel and only 0/1 values. Names are unique.
  /// Throws UsageError otherwise.
  void add(std::string name, Tensor weight, Tensor mask = Tensor());

  const std::vector<PrunableParam>& params() const { return params_; }
  const PrunableParam& param(int64_t layer) const { return params_[static_cast<size_t>(layer)]; }
  /// Number of layers (prunable weights).
  int64_t size() const { return static_cast<int64_t>(params_.size()); }
  /// d, the total number of prunable weights.
  int64_t numel() const { return numel_; }
  /// numel of each layer, in order. [size()]
  std::vector<int64_t> layer_sizes() const;
  /// The layer holding flat index q (0 <= q < numel()).
  int64_t layer_of(int64_t q) const;

  /// Copy of w. [d]
  std::vector<float> flat_weights() const;
  /// Copy of the concatenated masks. [d]
  std::vector<float> flat_mask() const;
  /// Writes w back into the weights. values: [d]
  void set_flat_weights(const std::vector<float>& values);

  /// Number of pruned (mask 0) weights of one layer, and of all layers.
  int64_t pruned_count(int64_t layer) const;
  int64_t pruned_count() const;

  /// Marks flat indices as pruned (mask 0) and zeroes their weights.
  void prune(const std::vector<int64_t>& flat_indices);
  /// Sets every pruned weight (mask 0) to exactly +0.
  void apply_masks();

  /// FLOP costs: the multiply-adds one weight of each layer costs per image
  /// (H_out·W_out for a conv, 1 for a linear layer), [size()], each >= 1,
  /// and `other_macs`, those of the model's layers outside the set. Throws
  /// UsageError on a wrong size or a cost below 1.
  void set_costs(std::vector<int64_t> per_weight, int64_t other_macs = 0);
  bool has_costs() const { return !costs_.empty(); }
  /// c_l of one layer; 0 without costs.
  int64_t cost(int64_t layer) const { return has_costs() ? costs_[static_cast<size_t>(layer)] : 0; }
  int64_t other_macs() const { return other_macs_; }
  /// Σ_l numel_l·c_l: the multiply-adds of the prunable weights, dense.
  int64_t dense_macs() const;
  /// Σ_l (numel_l − pruned_l)·c_l: those of the weights still unpruned.
  int64_t remaining_macs() const;

 private:
  std::vector<PrunableParam> params_;
  int64_t numel_ = 0;
  std::vector<int64_t> costs_;  // empty = no costs
  int64_t other_macs_ = 0;
};

}  // namespace spruce::pruning
