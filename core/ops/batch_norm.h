// Batch normalisation over N, H, W per channel.
#pragma once

#include "core/tensor.h"

namespace spruce::ops {

struct BatchNormOptions {
  bool training = true;
  float momentum = 0.1f;  // running = (1 - momentum) running + momentum batch
  float eps = 1e-5f;
};

/// x [N, C, H, W] (or [N, C]), weight/bias [C] (gamma, beta), running_mean /
/// running_var [C] buffers, updated in place in training mode with the
/// unbiased batch variance, as PyTorch does. Training normalises with the
/// biased batch variance; eval with the running statistics.
/// Gradients flow to x, weight and bias.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  Tensor& running_mean, Tensor& running_var, const BatchNormOptions& options);

}  // namespace spruce::ops
