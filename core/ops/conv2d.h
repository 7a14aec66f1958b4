// 2-D convolution (cross-correlation, as in PyTorch), NCHW, with stride,
// zero padding and groups; forward and backward in core/ops/conv2d.cpp.
#pragma once

#include "../error.h"
#include "../tensor.h"
#include "channel_sums.h"

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
/// Throws UsageError on inconsistent shapes or options.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

/// conv2d() that also takes the per-channel sums of its output for a batch
/// norm that follows (channel_sums.h: sums->center is the caller's, C_out
/// values) when its kernel can (Winograd, 3x3 stride-1 convs): then
/// sums->filled is true and s1, s2 hold N C_out values each; otherwise
/// sums->filled is false. Same output, same graph as conv2d().
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options, ChannelSums* sums);

/// What conv2d_fused does to each output value before writing it:
///   out[n, o, :, :] = act(scale[o] * conv[n, o, :, :] + shift[o] + residual[n, o, :, :])
/// with act = max(., 0) when relu, else the identity.
struct ConvEpilogue {
  Tensor scale{};     // [C_out]; undefined means 1
  Tensor shift{};     // [C_out]; undefined means 0
  Tensor residual{};  // [N, C_out, H_out, W_out]; undefined means none
  bool relu = false;
};

/// Inference conv2d (no bias) with a per-channel affine map, a residual add
/// and a ReLU applied as each output value is written: the eval-mode
/// conv -> batch_norm -> add -> relu of a block in one pass over the
/// output, with the batch norm folded into scale and shift
/// (batch_norm_eval_affine). Same shapes and kernels as conv2d; equal to
/// relu(conv2d(x, weight) * scale + shift + residual) up to float rounding
/// (the direct kernels fold the scale into the weights). It records no graph:
/// throws UsageError when grad mode is on and an input requires a
/// gradient, UsageError on inconsistent shapes.
Tensor conv2d_fused(const Tensor& x, const Tensor& weight, const ConvEpilogue& epilogue,
                    const Conv2dOptions& options = {});

/// Whether an inference forward gives each sample the same bits however its
/// work is split: on any thread count, and in any batch of two or more. True
/// in builds with spruce's own conv kernels (AVX2 + FMA), whose sums run in a
/// fixed order per sample; false in a portable build, whose convs are im2col
/// + OpenBLAS products split over the threads, and OpenBLAS picks its kernels
/// by the matrices' sizes (layers/inference_threads.h changes a forward's
/// thread count or batch only when this holds).
bool inference_split_invariant();

}  // namespace spruce::ops
