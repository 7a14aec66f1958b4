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

/// sparse_conv2d_fused(sparse_conv2d_fused(x, w1, m1, c1, e1, o), w2, m2, c2,
/// e2, o) with o = {stride 1, padding 1} and 3x3 weights (ResNet's basic
/// block); e1 takes no residual. With at least as many samples as threads,
/// each thread takes a sample through both convs in turn, and the middle
/// activation stays in its cache as the padded planes the second conv reads,
/// instead of going to memory as NCHW and being read back and re-packed;
/// fewer samples run the two calls. The same sums in the same order: bit for
/// bit the two calls. Throws as sparse_conv2d_fused does, and UsageError for
/// other kernel sizes or a residual in e1.
Tensor sparse_conv2d_pair_fused(const Tensor& x, const Tensor& w1, const Tensor& m1,
                                SparseWeightCache& c1, const ConvEpilogue& e1, const Tensor& w2,
                                const Tensor& m2, SparseWeightCache& c2, const ConvEpilogue& e2);

/// The crossover of a conv with groups 1: it runs sparse in inference when
/// its density (nonzeros / weights) is at most this. It depends on what the
/// kernels do for the geometry and batch (the crossover table of
/// `spruce-bench --sections sparse`; measured 2026-12-04, AVX-512, dense over
/// sparse time >= 1 from):
/// - one sample, k x k with k > 1: 0.6 at stride 1, 0.5 strided (the dense
///   side is then the direct kernel: Winograd needs two samples or more;
///   1 thread, 3x3 layers of ResNet-20 on 28x28);
/// - stride > 1: 0.4 (batch 128, 2 threads: 3x3 dense loses from 0.35-0.45;
///   1x1 stride-2 shortcuts: the sparse kernel wins at every density, 0.1-0.5);
/// - 1x1 stride 1 on planes under 128 pixels (MobileNet's 7x7 .. 1x1, which
///   put several samples side by side and finish through a row buffer): 0.2;
/// - otherwise (3x3 stride 1, 1x1 on planes of 128 pixels or more): 0.33.
double sparse_conv_max_density(int64_t kernel_size, int64_t stride, int64_t out_pixels,
                               int64_t batch);

/// x [N, in] -> x (weight * multiplier)^T + bias, [N, out], from the nonzeros
/// `cache` keeps (see sparse_conv2d_fused).
Tensor sparse_linear(const Tensor& x, const Tensor& weight, const Tensor& multiplier,
                     SparseWeightCache& cache, const Tensor& bias = Tensor());

}  // namespace spruce::ops
