// Conv2d: a 2-D convolution layer (PyTorch's nn.Conv2d with square kernels),
// dense, grouped or depthwise.
#pragma once

#include <cstdint>

#include "../core/error.h"
#include "../core/ops/conv2d.h"
#include "../core/ops/sparse_weights.h"
#include "../core/random.h"
#include "module.h"

namespace spruce {

/// x [N, in_channels, H, W] -> [N, out_channels, H_out, W_out] with
/// H_out = (H + 2 padding - kernel_size) / stride + 1 (likewise W_out).
/// Parameters: "weight" [out_channels, in_channels / groups, k, k] (prunable)
/// and, when `bias`, "bias" [out_channels]. PyTorch's default initialisation:
/// weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * k * k
/// (kaiming_uniform, a = sqrt(5)), same bound for the bias.
/// In eval mode with no graph recorded (NoGradGuard) a conv with groups 1
/// whose masked weight is sparse enough (ops::SparseWeightCache::use_sparse)
/// runs the sparse kernels of core/ops/sparse_conv2d.h on its nonzeros,
/// compressed once and recompressed whenever the weight or mask changes.
/// Example: Conv2d(16, 32, 3, {.stride = 2, .padding = 1}, Bias::kNo, gen).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
         const ops::Conv2dOptions& options = {}, Bias bias = Bias::kYes,
         Generator& gen = default_generator());

  Tensor forward(const Tensor& x) override;
  /// Inference only (throws UsageError when a graph would be
  /// recorded): ops::conv2d_fused of x and the masked weight with `epilogue`,
  /// on the sparse kernels when the weight is sparse enough (see above).
  Tensor forward_fused(const Tensor& x, const ops::ConvEpilogue& epilogue);
  /// Inference only: then.forward_fused(forward_fused(x, epilogue),
  /// then_epilogue) for two 3x3 convs of stride 1 and padding 1 that both
  /// run on the sparse kernels here (ResNet's basic block), through
  /// ops::sparse_conv2d_pair_fused: the middle activation stays in the
  /// thread's cache. Throws UsageError unless both run sparse.
  Tensor forward_sparse_pair(const Tensor& x, const ops::ConvEpilogue& epilogue, Conv2d& then,
                             const ops::ConvEpilogue& then_epilogue);
  /// forward() that also takes the output's per-channel sums where its
  /// kernel can (ops::conv2d with sums, core/ops/channel_sums.h), for a
  /// batch norm in training next (BatchNorm2d::forward_fused); sums may be
  /// null (forward() itself).
  Tensor forward_with_sums(const Tensor& x, ops::ChannelSums* sums);
  /// Whether inference on an input of this shape currently runs this layer
  /// on the sparse kernels (density against the geometry's crossover,
  /// ops::sparse_conv_max_density).
  bool runs_sparse(const Shape& input);
  /// The output shape for an input shape [N, in_channels, H, W].
  Shape output_shape(const Shape& input) const;

  Tensor weight() const { return weight_; }
  /// The weight as the forward uses it: weight * mask when a mask is attached.
  Tensor masked_weight() const { return masked_parameter("weight"); }
  /// Undefined when the layer has no bias.
  Tensor bias() const { return bias_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t kernel_size() const { return kernel_size_; }
  const ops::Conv2dOptions& options() const { return options_; }

 private:
  int64_t in_channels_;
  int64_t out_channels_;
  int64_t kernel_size_;
  ops::Conv2dOptions options_;
  Tensor weight_;  // [C_out, C_in / groups, k, k]
  Tensor bias_;    // [C_out] or undefined
  ops::SparseWeightCache sparse_;
};

}  // namespace spruce
