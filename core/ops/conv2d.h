// 2-D convolution (cross-correlation, as in PyTorch), NCHW, with stride,
// zero padding and groups; forward and backward in core/ops/conv2d.cpp.
#pragma once

#include "core/tensor.h"

namespace spruce::ops {

struct Conv2dOptions {
  int64_t stride = 1;
  int64_t padding = 0;  // zero padding on all four sides
  int64_t groups = 1;   // groups == in_channels == out_channels is depthwise
};

/// x [N, C_in, H, W], weight [C_out, C_in / groups, KH, KW], bias [C_out] or
/// undefined -> [N, C_out, H_out, W_out] with
/// H_out = (H + 2 padding - KH) / stride + 1 (likewise W_out).
/// Dense and grouped convs run im2col + sgemm; depthwise (groups == C_in ==
/// C_out) runs a direct kernel. The backward adds into the gradients of the
/// inputs that require one. Results are deterministic for a given thread count.
/// Throws std::invalid_argument on inconsistent shapes or options.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

}  // namespace spruce::ops
