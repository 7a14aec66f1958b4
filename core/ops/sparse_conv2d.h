// Sparse inference: conv2d (groups 1, any kernel size and stride) and linear
// layers whose weights are mostly zeros, computed from the compressed
// nonzeros alone (sparse_weights.h) with the row kernels of sparse_spmm.h.
// Forward only, no graph: for eval mode under NoGradGuard.
#pragma once

#include "../error.h"
#include "../tensor.h"
#include "conv2d.h"
#include "sparse_weights.h"

namespace spruce::ops {

/// conv2d_fused(x, weight * multiplier, epilogue, options) from the nonzeros
/// that `cache` keeps for weight x multiplier (recompressed first when either
/// changed). Equal to the dense result up to float rounding; groups must be
/// 1. The epilogue's shift doubles as a conv bias. Throws
/// UsageError on inconsistent shapes, UsageError when a
/// graph would have to be recorded.
Tensor sparse_conv2d_fused(const Tensor& x, const Tensor& weight, const Tensor& multiplier,
                           SparseWeightCache& cache, const ConvEpilogue& epilogue,
                           const Conv2dOptions& options = {});

/// x [N, in] -> x (weight * multiplier)^T + bias, [N, out], from the nonzeros
/// `cache` keeps (see sparse_conv2d_fused).
Tensor sparse_linear(const Tensor& x, const Tensor& weight, const Tensor& multiplier,
                     SparseWeightCache& cache, const Tensor& bias = Tensor());

}  // namespace spruce::ops
