// Winograd F(4x4, 3x3) for the dense 3x3 stride-1 convs of ResNets, used by
// core/ops/conv2d.cpp in place of the direct kernels in builds with AVX2 +
// FMA (8 channels a vector) or AVX-512 (16): the forward, d_input (the forward of the adjoint conv,
// again 3x3 pad 1) and d_weight (the adjoint of the transforms).
//
// The direct kernel already runs these convs at about the machine's sgemm
// rate, so the only way to go faster is to do fewer multiply-adds: each 4x4
// block of outputs is computed from a 6x6 input patch with 36 products per
// (input, output) channel pair instead of 144, 4x fewer (F(2x2, 3x3), used
// until 2026-12-05, saves 2.25x; with ResNet-20's 16-64 channels the
// transforms, additions done a vector of channels at a time, cost about as
// much as the products, and F(4x4) made the convs up to 1.4x faster; 14x14
// planes, padded to 16x16, gained nothing then: their tile positions shared
// two L1 sets, fixed later by Plan::VX / MX in conv2d_winograd.cpp). The
// results differ from the direct sum by rounding only: its coefficients (up
// to 8, and 1/24) make that a few times the direct sum's, ~1e-5 of the
// outputs' scale.
#pragma once

#include <cstdint>

#include "im2col.h"

namespace spruce::ops::winograd {

/// Whether forward() handles this conv: built for AVX2 + FMA, kernel 3x3,
/// stride 1, padding 1, one group, C and OC multiples of 16, and a batch
/// (N >= 2: a single sample, as in per-sample Fisher gradients, keeps the
/// direct kernel, which splits one sample over the threads). Depends on the
/// geometry only, never on the thread count.
bool supports(const ConvGeometry& g);

/// out[n] = conv(x[n], w), transformed by `o` (ConvOutput: scale folded into
/// the transformed weights, shift, residual and ReLU applied as the output
/// is written), for the samples [n_lo, n_hi); o.residual may be out itself
/// (the conv is then added to out, as conv2d's backward does for d_input). x [N, C, H, W], w [OC,
/// C, 3, 3], out [N, OC, H, W]. Each sample is computed the same way whatever the split of samples
/// over threads.
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out);

/// Two convs in a row, out = conv2(conv1(x)) with their own transforms
/// (o1 without a residual; o2's residual indexed as out): ResNet's basic
/// block in inference. Each sample runs through both convs in turn, and
/// conv1's output goes to conv2 as the padded pixel vectors conv2 reads,
/// never written as NCHW and transposed back; the results are bit for bit
/// those of the two forward() calls. g1 and g2 must both be supported, with
/// the same N, H, W and g2.C == g1.OC. Splits the samples over the threads.
void forward_pair(const float* x, const float* w1, const ConvOutput& o1, const ConvGeometry& g1,
                  const float* w2, const ConvOutput& o2, const ConvGeometry& g2, float* out);

/// dw += the sum over the samples [n_lo, n_hi) of d_out[n] correlated with
/// x[n] (the weight gradient of forward(); conv geometry g as for
/// forward(), which must support it), by the adjoint of the same
/// transforms: 16 products summed over tiles and samples, then one 4x4 ->
/// 3x3 transform per channel pair. Each element is summed in a fixed order
/// whatever the thread count. d_out [N, OC, H, W], dw [OC, C, 3, 3].
void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw);

}  // namespace spruce::ops::winograd
