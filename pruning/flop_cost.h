// What each prunable weight costs to run (pruning/README.md, "FLOP-aware
// pruning"): one weight of a conv layer takes part in one multiply-add per
// output position, H_out·W_out per image; one weight of a linear layer in
// one. The output sizes are read off the model itself, from one forward of
// a single zero input: the autograd graph of that forward holds every conv
// and linear op with its output, and its weight input leads back to the
// parameter (through the mask multiplication when the weight is masked). So
// any model built from conv2d and linear ops is covered without a table of
// architectures.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/tensor.h"
#include "../layers/module.h"
#include "prunable_set.h"

namespace spruce::pruning {

struct FlopCosts {
  /// Multiply-adds per image of one weight of each layer of the set. [size()]
  std::vector<int64_t> per_weight;
  /// Multiply-adds per image of the whole dense model (conv, linear and
  /// matmul ops, as ops::MacCounter counts them).
  int64_t model_macs = 0;
};

/// Measures the costs of `set`'s weights in `model` with one forward of a
/// zero input of shape `sample` (one sample: [C, H, W] for an image model;
/// a batch of one is made of it) in eval mode with the graph
/// recorded (so no sparse kernel and no fused batch norm: dense shapes).
/// The model's mode is restored and no gradient is computed. Throws
/// UsageError when a weight of the set is not the weight of a conv2d or
/// linear op in that forward.
FlopCosts measure_flop_costs(Module& model, const PrunableSet& set, const Shape& sample);

/// measure_flop_costs, stored in the set (PrunableSet::set_costs), with the
/// model's multiply-adds outside the set as its other_macs.
void attach_flop_costs(Module& model, PrunableSet& set, const Shape& sample);

}  // namespace spruce::pruning
