// Re-estimating batch-norm running statistics after the weights changed.
//
// One-shot pruning zeroes weights but leaves every BatchNorm2d's running
// mean/var describing the dense network's activations; at eval time these
// stale statistics cost most of the accuracy of zeroing-only pruners.
// recalibrate_batch_norm runs a few training batches forward (no gradients, no
// parameter change) and replaces the running statistics with their cumulative
// average over exactly those batches (PyTorch's momentum=None), not an
// exponential average that would still remember the old values.
#pragma once

#include <cstdint>
#include <functional>

#include "module.h"

namespace spruce {

/// Gives the next input batch x [N, C, H, W] for the model's forward.
using InputSource = std::function<Tensor()>;

/// Re-estimates running_mean / running_var of every BatchNorm2d in `model`
/// from `num_batches` batches of `next_batch` (num_batches >= 0; 0 does
/// nothing). The forwards run in training mode under a NoGradGuard; afterwards
/// each BatchNorm2d's running_mean is the mean over the batches of the
/// per-channel batch mean of its input, and running_var the mean over the
/// batches of the per-channel *unbiased* batch variance (exactly what PyTorch
/// computes with momentum=None after reset_running_stats()). Parameters,
/// masks, num_batches_tracked, each layer's momentum and every module's
/// training flag are left (or restored to) what they were, also when
/// next_batch or a forward throws (the running statistics are then partial).
/// Returns the number of BatchNorm2d layers recalibrated.
int64_t recalibrate_batch_norm(Module& model, int64_t num_batches, const InputSource& next_batch);

}  // namespace spruce
