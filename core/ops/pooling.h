// Spatial pooling, NCHW.
#pragma once

#include "core/tensor.h"

namespace spruce::ops {

struct Pool2dOptions {
  int64_t kernel = 2;
  int64_t stride = 2;
  int64_t padding = 0;
};

/// x [N, C, H, W] -> [N, C, H_out, W_out]; padded cells never win the max.
/// The gradient goes to the first maximum in each window.
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
/// Average over each window; padded cells count as zeros in the divisor
/// (PyTorch's count_include_pad = true).
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
/// x [N, C, H, W] -> [N, C]: mean over H and W.
Tensor global_avg_pool2d(const Tensor& x);

}  // namespace spruce::ops
