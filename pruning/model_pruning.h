// Connects the pruning math to a model: which weights are prunable (by name
// patterns), their masks (named buffers of the Module, "<weight>_mask"), and
// the empirical-Fisher gradients of those weights collected on fresh samples
// with the model in eval mode (pruning/README.md, "Empirical Fisher").
//
// pruning/ sees a model only through Module's named parameters and masks, and
// data only through a BatchSource callback, so it depends on layers/ and core/
// alone.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../layers/module.h"
#include "fisher_gradients.h"
#include "prunable_set.h"

namespace spruce::pruning {

/// Gives the next mini-batch: images [b, C, H, W] and their labels.
using BatchSource = std::function<std::pair<Tensor, std::vector<int32_t>>()>;

/// The prunable weights of `model` that match any of `patterns` (glob, see
/// layers/module.h), in the model's order, each with its mask; a weight
/// without a mask gets an all-ones mask first. Throws UsageError when no
/// weight matches, naming the patterns.
PrunableSet attach_masks(Module& model, const std::vector<std::string>& patterns);

/// Collects `m` gradients of the loss on mini-batches from `next_batch`, with
/// the model in eval mode (batch norm on running statistics), keeping only
/// the prunable weights' gradients as the rows of `bank` ([m, d]). The model's
/// training mode and its parameters' gradients are restored to what they were
/// (gradients dropped). `progress(i)` is called after each gradient.
void collect_fisher_gradients(Module& model, const PrunableSet& set, int64_t m,
                              const BatchSource& next_batch, GradientBank& bank,
                              const std::function<void(int64_t)>& progress = {});

}  // namespace spruce::pruning
