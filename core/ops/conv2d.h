// 2-D convolution (cross-correlation, as in PyTorch), NCHW.
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
/// Dense and grouped convs run im2col + sgemm; depthwise runs a direct kernel.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

}  // namespace spruce::ops
