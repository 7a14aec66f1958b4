// Two 3x3 convs in a row (stride 1, padding 1, each with its own output
// transform: ResNet's basic block) fused for inference.
//
// Run as two conv2d_fused calls, the first conv's output is written as
// NCHW by one set of transposes and read back into channel vectors by
// another, over the whole batch. Here each sample goes through both
// Winograd convs in turn and the first conv's output stays as the padded
// pixel vectors the second one reads (winograd::forward_pair). Same sums
// in the same order: the result is bit for bit that of the two calls.
#pragma once

#include <cstdint>

#include "conv2d.h"

namespace spruce::ops {

/// conv2d_fused(conv2d_fused(x, w1, e1, o), w2, e2, o) with o = {stride 1,
/// padding 1} and w1, w2 3x3 one-group weights; e1 takes no residual. Fused
/// (above) when both convs run on the Winograd kernels, else the two calls.
/// Inference only, and throws as conv2d_fused does.
Tensor conv2d_pair_fused(const Tensor& x, const Tensor& w1, const ConvEpilogue& e1,
                         const Tensor& w2, const ConvEpilogue& e2);

/// How many conv2d_pair_fused calls have run fused (tests).
int64_t conv2d_pair_fused_runs();

}  // namespace spruce::ops
