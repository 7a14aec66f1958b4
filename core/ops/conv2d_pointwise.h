// Pointwise (1x1, unpadded, one group, any stride) convolutions on our own
// register-blocked micro-kernels: MobileNet's pointwise convs hold ~95 % of
// its multiply-adds, and on the small planes of its last blocks (4x4, 2x2)
// they used to go to OpenBLAS, which this environment pins to its AVX2
// (Haswell) kernels; ResNet's option-B shortcuts are 1x1 stride-2 convs.
// Used by core/ops/conv2d.cpp for the forward (training and inference); the
// backward stays on the GEMM / direct kernels.
//
// out[n, o, p] = act(scale[o] * sum_c W[o, c] x[n, c, p] + shift[o] + res[n, o, p])
// is a product W [OC, C] @ X [C, N * P] whose columns are the (sample,
// pixel) pairs. Columns are packed R at a time into panels [C][R] (a
// 2x2 plane is then no narrower than a 28x28 one), the weights into blocks
// of B output channels [C][B], kept between calls while the weight does not
// change (packed_weights.h); the micro-kernel keeps an R x B block of
// outputs in registers (per input channel: B / lanes weight loads, R
// broadcasts, R * B / lanes FMAs), applies scale and shift as it stores the
// block, and the block goes back to NCHW through the channel-lane
// transposes of conv2d_lanes.h, which add the residual and apply the ReLU.
//   AVX-512: R = 12 columns x B = 32 channels (24 zmm accumulators), or R = 8
//            (16) when 12 would pad few columns (batch 1) much more
//   AVX2:    R = 6 columns x B = 16 channels (12 ymm accumulators)
// On planes of 96 pixels or more at stride 1, the AVX-512 kernel turns the
// product around (planes_kernel()): 3 vectors of 16 pixels x 8 output
// channels in registers, the input read in place from NCHW, each output
// row stored straight into NCHW (no packing, no transposes), same sums in
// the same order.
// Both are compiled when the build targets AVX-512 (tests run both), only
// the AVX2 one for an AVX2 build; without AVX2 + FMA, supports() is false and
// conv2d keeps to its GEMM path. Every output is one task's sum over the
// input channels in order, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "../tensor.h"
#include "im2col.h"

namespace spruce::ops::pointwise {

enum class Isa { kNone, kAvx2, kAvx512 };

/// The best micro-kernel this build has (kNone: none).
Isa best_isa();

/// Whether forward() handles g: a pointwise conv and a micro-kernel built.
bool supports(const ConvGeometry& g);

/// out = conv(x, w) transformed by o, for every sample, on the micro-kernel
/// `isa` (which the build must have; best_isa() by default). x [N, C, H, W],
/// w [OC, C], out [N, OC, OH, OW]. With `version` (the content version of
/// w's storage), w's packed copy is kept between calls (packed_weights.h)
/// and rebuilt only when the version changes; without, w is packed afresh.
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g, float* out,
             Isa isa = best_isa(), const ContentVersion* version = nullptr);

/// forward() on columns given as rows: x[q * ld + c] is input channel c of
/// column q = n * OH * OW + output pixel (ld >= C), read in place instead of
/// packed (the fused depthwise-separable pair writes its depthwise output
/// so). The kernel reads whole panels: x must hold rows_padding(isa) rows
/// past the last column (their values only reach outputs that are
/// dropped). Same sums, same order: bit for bit
/// forward() on the same values.
void forward_rows(const float* x, int64_t ld, const float* w, const ConvOutput& o,
                  const ConvGeometry& g, float* out, Isa isa = best_isa(),
                  const ContentVersion* version = nullptr);

/// The columns of the widest panel of `isa`'s micro-kernels (0 without one).
int64_t rows_padding(Isa isa);

/// Whether forward() runs g on the planes kernel of `isa` (AVX-512, stride
/// 1, planes of 96 pixels or more): it reads the NCHW input in place and
/// stores NCHW output rows directly, so a caller holding NCHW data should
/// not convert it to rows for forward_rows().
bool planes_kernel(const ConvGeometry& g, Isa isa = best_isa());

}  // namespace spruce::ops::pointwise
