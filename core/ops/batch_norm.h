// Batch normalisation over N, H, W per channel (Ioffe & Szegedy 2015).
//
// Training mode normalises each channel with its batch mean and biased batch
// variance and updates the running statistics in place; eval mode uses the
// running statistics, so the op is a per-channel affine map. Semantics match
// torch.nn.functional.batch_norm.
#pragma once

#include "../tensor.h"
#include "channel_sums.h"

namespace spruce::ops {

struct BatchNormOptions {
  bool training = true;
  float momentum = 0.1f;  // running = (1 - momentum) running + momentum batch
  float eps = 1e-5f;      // added to the variance before the square root
  /// Training: the input's per-channel sums, taken by the conv that wrote it
  /// (channel_sums.h), used instead of a pass over the input when filled and
  /// of x's size; a channel block whose sums lie far from their center (the
  /// mean more than 2 standard deviations away) is summed again as without.
  const ChannelSums* sums = nullptr;
};

/// What follows the batch norm in the same call (ResNet's block tails):
/// batch_norm(x, ..., {.residual = r, .relu = true}) = relu(bn(x) + r).
struct BatchNormTail {
  Tensor residual{};  // added to the output: x's shape, or undefined for none
  bool relu = false;  // ReLU last
};

/// x [N, C, H, W] (or [N, C]) -> same shape.
/// weight/bias [C] (gamma, beta; either may be undefined, meaning 1 and 0);
/// running_mean / running_var [C] buffers.
/// Training: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta with the
/// biased batch variance var_B; running_mean/running_var are updated in place
/// with the batch mean and the *unbiased* batch variance, as PyTorch does
/// (skipped when they are undefined). Needs more than one value per channel.
/// Eval: the same formula with running_mean/running_var, which are not touched.
/// Gradients flow to x, weight and bias: through the batch statistics in
/// training mode, through the affine map in eval mode.
/// With a tail the output is act(y + residual) (act = ReLU or the identity),
/// bit for bit ops::relu(ops::add(y, residual)), written in one pass and
/// recorded as one node: its backward masks the gradient by the output,
/// hands it to the residual and to the batch norm's backward without the
/// separate passes and buffers of add and relu (gradients to the residual
/// too).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, const BatchNormOptions& options,
                  const BatchNormTail& tail = {});

/// The per-channel affine map of eval-mode batch_norm, y = scale * x + shift:
/// scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean *
/// scale (each computed in double, rounded once), [C] each. weight / bias
/// may be undefined (1 and 0); running_mean / running_var [C] are required.
/// Read from the current values at every call, so a fold into a conv
/// (conv2d_fused) is never stale. Records no graph.
struct ChannelAffine {
  Tensor scale;  // [C]
  Tensor shift;  // [C]
};
ChannelAffine batch_norm_eval_affine(const Tensor& weight, const Tensor& bias,
                                     const Tensor& running_mean, const Tensor& running_var,
                                     float eps);

/// relu(y) for a y that batch_norm produced with a graph node and no ReLU
/// in its tail: the same
/// values, recorded as one fused node that differentiates relu(batch_norm(x))
/// straight from batch_norm's inputs and the ReLU mask, so y need not be kept
/// for the backward. Returns an undefined tensor when y is not such an output
/// (grad mode off, or made by another op). ops::relu calls it; y itself and
/// its own node are unchanged, so other uses of y still differentiate.
Tensor relu_of_batch_norm(const Tensor& y);

}  // namespace spruce::ops
