// Spatial pooling, NCHW: max, average and global average, each with its
// backward. Output sizes follow PyTorch's floor mode:
//   H_out = (H + 2 padding - kernel) / stride + 1, likewise W_out.
#pragma once

#include "../tensor.h"

namespace spruce::ops {

/// A square window; padding is implicit on every side (at most kernel / 2, as
/// in PyTorch, so every window covers at least one real pixel).
struct Pool2dOptions {
  int64_t kernel = 2;
  int64_t stride = 2;
  int64_t padding = 0;
};

/// x [N, C, H, W] -> [N, C, H_out, W_out]; padded cells never win the max.
/// The gradient goes to the first maximum in each window (row-major order);
/// the argmax indices are kept for the backward only when x needs a gradient.
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
/// x [N, C, H, W] -> [N, C, H_out, W_out]: mean over each window; padded
/// cells count as zeros in the divisor kernel * kernel (PyTorch's
/// count_include_pad = true).
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
/// x [N, C, H, W] -> [N, C]: mean over H and W.
Tensor global_avg_pool2d(const Tensor& x);

}  // namespace spruce::ops
