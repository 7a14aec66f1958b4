// Depthwise convolutions (groups == C_in == C_out, MobileNet's 3x3 convs),
// forward and backward, used by core/ops/conv2d.cpp in place of im2col +
// sgemm (whose GEMMs would have K = KH * KW and one row).
//
// Two kernels, chosen at run time by forward() and backward():
//  - tiles (conv2d_depthwise_tiles.cpp, builds with AVX2 + FMA): 8 channels
//    of a sample transposed into a tile of 8-lane pixel vectors, where every
//    tap of every output pixel is one vector load and one FMA;
//  - portable (conv2d_depthwise.cpp, any CPU): each plane split into
//    stride x stride phase planes, so every tap is one long contiguous loop
//    that the compiler vectorises.
// Both write their result through a ConvOutput (im2col.h): an eval-mode
// depthwise conv -> batch norm -> relu writes its activation once.
#pragma once

#include <cstdint>

#include "im2col.h"

namespace spruce::ops::depthwise {

/// Whether g is a depthwise conv: groups == C_in == C_out > 1 (a channel
/// multiplier, C_out > C_in, stays on the grouped GEMM path).
inline bool applies(const ConvGeometry& g) { return g.groups == g.C && g.OC == g.C && g.C > 1; }

/// out = conv(x, w) transformed by `o`, on the fastest kernel the build and
/// g allow. x [N, C, H, W], w [C, 1, KH, KW], out [N, C, OH, OW].
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out);

/// dx (+)= d_input (assigned when dx_fresh; skipped when dx is null) and
/// dw += d_weight (skipped when null). d_weight is summed per fixed block of
/// samples and the blocks are added in order, so no result depends on the
/// thread count.
void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw);

namespace portable {
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out);
void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw);
}  // namespace portable

namespace tiles {
/// Whether this kernel handles g: built for AVX2 and FMA, square kernels of
/// 2x2 to 5x5, padding smaller than the kernel, any stride.
bool supports(const ConvGeometry& g);
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out);
/// forward() with the output as rows of channels: out[(n * OH * OW + p) * ld
/// + c] (ld >= C), the layout pointwise::forward_rows reads; no residual
/// (o.residual must be null). The same values as forward(), bit for bit.
void forward_rows(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                  float* out, int64_t ld);
void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw);
}  // namespace tiles

}  // namespace spruce::ops::depthwise
