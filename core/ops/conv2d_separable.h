// A depthwise-separable conv pair (a depthwise conv, then a 1x1 conv, each
// with its own output transform: MobileNet's block) fused for inference.
//
// At batch 128 the two convs were each one pass over the whole batch: the
// depthwise output (up to 13 MB for MobileNetV1's first block) was written
// to memory and read back by the 1x1 conv, and on a machine with ~9 GB/s
// per process that traffic, not the multiply-adds, set the pace of the
// early blocks. Here each thread runs the pair on a chunk of a few samples
// at a time: the depthwise output of a chunk stays in the thread's L2 and
// the 1x1 conv reads it from there. Same kernels, same sums in the same
// order: the result is bit for bit that of the two conv2d_fused calls.
#pragma once

#include <cstdint>

#include "conv2d.h"

namespace spruce::ops {

/// conv2d_fused(conv2d_fused(x, dw_weight, dw_epilogue, dw_options),
/// pw_weight, pw_epilogue) with dw_weight a depthwise conv's ([C, 1, K, K],
/// dw_options.groups == C) and pw_weight a 1x1 conv's ([C_out, C, 1, 1]);
/// dw_epilogue takes no residual. Runs chunk by chunk (above) when the build
/// has the pointwise kernel and the batch gives every thread a few
/// samples, else as the two calls. Inference only, and throws as
/// conv2d_fused does.
Tensor separable_conv2d_fused(const Tensor& x, const Tensor& dw_weight,
                              const ConvEpilogue& dw_epilogue, const Conv2dOptions& dw_options,
                              const Tensor& pw_weight, const ConvEpilogue& pw_epilogue);

/// How many separable_conv2d_fused calls have run chunk by chunk (tests).
int64_t separable_fused_runs();

}  // namespace spruce::ops
