// Direct kernels for dense convolutions (ResNet's 3x3 convs: forward at any
// stride, backward at stride 1), used by core/ops/conv2d.cpp in place of
// im2col + sgemm (conv2d_gemm.h) where the CPU allows (AVX2 + FMA). The
// depthwise kernels are in conv2d_depthwise.h.
//
// im2col writes a column matrix KH * KW times the size of the input, and
// OpenBLAS then copies it once more into its packed panels; with few
// channels (C_out = 16 or 32) each packed value feeds only C_out
// multiply-adds, so a ResNet step spent more time moving columns than
// multiplying. These kernels read the input in place instead: each sample is
// copied once into a zero-padded plane per channel, where the input of output
// pixel (oh, ow) under tap (c, kh, kw) sits at a fixed offset from
// (oh, ow)'s own position. See conv2d_direct.cpp for the kernels.
#pragma once

#include <cstdint>

#include "im2col.h"

namespace spruce::ops::direct {

/// Whether the direct kernels handle this conv: built for a CPU with AVX2 and
/// FMA, stride 1, one group, a kernel larger than 1x1 and padding < kernel
/// (the transposed conv of the input gradient then has padding >= 0).
bool supports(const ConvGeometry& g);

/// Whether forward() handles this conv: AVX2 + FMA, one group, any stride,
/// padding smaller than the kernel (1x1 stride-1 convs read x in place).
bool supports_forward(const ConvGeometry& g);

/// out[n] = conv(x[n], w), transformed by `o`, for the samples [n_lo, n_hi):
/// the scale is folded into the packed weights, the shift is the
/// accumulators' start value, residual and ReLU are applied as the result is
/// written back. x [N, C, H, W], w [OC, C, KH, KW], out [N, OC, OH, OW].
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out);

/// dx[n] (+)= the transposed conv of d_out[n] with w for the samples
/// [n_lo, n_hi): assigned when `fresh`, added otherwise. dx [N, C, H, W].
void input_grad(const float* d_out, const float* w, const ConvGeometry& g, int64_t n_lo,
                int64_t n_hi, bool fresh, float* dx);

/// dw += the sum over the samples [n_lo, n_hi) of d_out[n] correlated with
/// x[n]. dw [OC, C, KH, KW]. Each element is summed in a fixed order (sample,
/// then pixel), whatever the thread count.
void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw);

}  // namespace spruce::ops::direct
