// conv -> batch norm (-> + residual) (-> ReLU): the tail shared by ResNet's
// and MobileNet's blocks, with a one-pass path for inference; and the pairs
// of them fused for inference: MobileNet's depthwise-separable pair and
// ResNet's basic block.
#pragma once

#include "../core/tensor.h"
#include "batch_norm2d.h"
#include "conv2d.h"

namespace spruce {

/// What follows the batch norm, named at call sites:
/// conv_batch_norm(conv, bn, x, {.residual = r, .relu = true}).
struct ConvBnTail {
  Tensor residual{};  // added after the batch norm: the output's shape, or undefined for none
  bool relu = false;  // ReLU last
};

/// act(bn(conv(x)) + tail.residual) with act = ReLU when tail.relu, else the
/// identity. x [N, C_in, H, W] -> [N, C_out, H_out, W_out].
/// With bn in eval mode and no graph being recorded (NoGradGuard), the batch
/// norm's running statistics are folded into a per-channel scale and shift
/// (read afresh at every call) and one ops::conv2d_fused call writes each
/// output value once. Otherwise conv.forward, then bn.forward_fused with the
/// residual and ReLU as its tail: values and gradients are bit for bit those
/// of the plain composition (bn.forward, ops::add, ops::relu), except that in
/// training a Winograd conv (3x3, stride 1) hands the batch norm its output's
/// per-channel sums (core/ops/channel_sums.h) for the batch statistics, which
/// then agree with the composition's within float rounding.
Tensor conv_batch_norm(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const ConvBnTail& tail = {});

/// MobileNet's depthwise-separable pair: relu(bn2(pw(relu(bn1(dw(x)))))),
/// dw a depthwise Conv2d and pw a 1x1 one. In inference (both batch norms
/// in eval mode, no graph recorded, pw not on the sparse kernels) one
/// ops::separable_conv2d_fused call runs the pair a few samples at a time,
/// so the depthwise output never leaves the cache; the result is the same
/// as the two conv_batch_norm calls it stands for otherwise.
Tensor separable_conv_batch_norm(Conv2d& dw, BatchNorm2d& bn1, Conv2d& pw, BatchNorm2d& bn2,
                                 const Tensor& x);

/// ResNet's basic block body: relu(bn2(c2(relu(bn1(c1(x))))) + residual),
/// c1 and c2 3x3 convs (residual undefined: none). In inference (both batch
/// norms in eval mode, no graph recorded, both stride 1 with padding 1) one
/// ops::conv2d_pair_fused call (neither conv on the sparse kernels) or one
/// ops::sparse_conv2d_pair_fused call (both on them) runs the pair a sample
/// at a time; the result is the same as the two conv_batch_norm calls it
/// stands for otherwise.
Tensor conv_pair_batch_norm(Conv2d& c1, BatchNorm2d& bn1, Conv2d& c2, BatchNorm2d& bn2,
                            const Tensor& x, const Tensor& residual);

}  // namespace spruce
