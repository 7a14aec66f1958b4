// BatchNorm2d: batch normalisation over N, H, W per channel (PyTorch's
// nn.BatchNorm2d, track_running_stats = true).
//
// Training mode normalises with the batch statistics and updates the running
// averages (running = (1 - momentum) running + momentum batch, unbiased batch
// variance); eval mode normalises with the running statistics.
#pragma once

#include <cstdint>

#include "../core/ops/batch_norm.h"
#include "module.h"

namespace spruce {

struct BatchNorm2dOptions {
  float momentum = 0.1f;
  float eps = 1e-5f;
  bool affine = true;  // learnable per-channel scale and shift
};

/// x [N, C, H, W] (or [N, C]) -> same shape.
/// Parameters (when affine): "weight" [C] = 1, "bias" [C] = 0, never prunable.
/// Buffers: "running_mean" [C] = 0, "running_var" [C] = 1 and
/// "num_batches_tracked" (shape [], the count of training-mode forwards, kept
/// as a float for key parity with PyTorch's state_dict; PyTorch's int64 loads
/// from .npz, and a state dict without it loads too, keeping the count).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, const BatchNorm2dOptions& options = {});

  Tensor forward(const Tensor& x) override;
  /// act(forward(x) + tail.residual) as one batch-norm op (ops::BatchNormTail):
  /// the same values and gradients, fewer passes over the activations. In
  /// training, `sums` (filled by the conv that wrote x, Conv2d::forward_with_sums)
  /// stands in for the pass that computes the batch statistics.
  Tensor forward_fused(const Tensor& x, const ops::BatchNormTail& tail,
                       const ops::ChannelSums* sums = nullptr);

  /// Undefined when not affine (likewise bias()).
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }
  Tensor running_mean() const { return running_mean_; }
  Tensor running_var() const { return running_var_; }
  Tensor num_batches_tracked() const { return num_batches_tracked_; }
  int64_t num_features() const { return num_features_; }
  const BatchNorm2dOptions& options() const { return options_; }
  /// Changes the running-average factor of later training-mode forwards
  /// (recalibrate_batch_norm sets 1/k per batch, then restores it).
  void set_momentum(float momentum) { options_.momentum = momentum; }

 private:
  int64_t num_features_;
  BatchNorm2dOptions options_;
  Tensor weight_;               // [C] gamma
  Tensor bias_;                 // [C] beta
  Tensor running_mean_;         // [C]
  Tensor running_var_;          // [C]
  Tensor num_batches_tracked_;  // []
  Tensor unit_scale_;           // [C] ones standing in for gamma when not affine
  Tensor zero_shift_;           // [C] zeros standing in for beta when not affine
};

}  // namespace spruce
