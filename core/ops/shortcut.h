// The option-A shortcut of the CIFAR ResNet (He et al. 2016): a parameter-free
// identity that halves the resolution and pads channels with zeros, used
// where a residual block changes shape. In PyTorch terms:
//   F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)),  p = (out_channels - C) / 2.
#pragma once

#include "../error.h"
#include "../tensor.h"

namespace spruce::ops {

/// x [N, C, H, W] -> [N, out_channels, ceil(H/2), ceil(W/2)]: keeps every
/// second pixel (rows and columns 0, 2, 4, ...) and puts the C input channels
/// in the middle, (out_channels - C) / 2 zero channels on each side.
/// Throws UsageError when out_channels < C or out_channels - C is odd.
/// The gradient of each kept pixel is the gradient of its output position;
/// skipped pixels and the zero channels pass no gradient.
Tensor shortcut_pad(const Tensor& x, int64_t out_channels);

}  // namespace spruce::ops
