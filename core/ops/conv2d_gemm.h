// The GEMM path of conv2d: im2col + sgemm over chunks of samples, for every
// conv that no direct kernel takes (dense and grouped convs without AVX2,
// grouped convs and 1x1 convs on small planes always; see
// conv2d_gemm.cpp). Each call handles a range of samples; core/ops/conv2d.cpp
// decides the ranges and the kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "im2col.h"

namespace spruce::ops::gemm_conv {

/// 1x1, stride 1, no padding: the input plane block is already the column matrix.
inline bool is_pointwise(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride == 1 && g.padding == 0;
}

/// out[n] = W * im2col(x[n]), transformed by o, for the samples [n_lo, n_hi).
void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out);

/// A stride-1 conv with a square kernel and padding < kernel has d_input =
/// conv(d_out, flipped and transposed weight, padding K - 1 - padding): an
/// im2col GEMM with K = C_out * KH * KW, instead of the col2im route whose
/// GEMM has K = C_out / groups (thin, memory-bound) and writes a column
/// matrix KH * KW times larger than dx.
inline bool transposed_input_grad(const ConvGeometry& g) {
  return g.stride == 1 && g.KH == g.KW && g.padding < g.KH && !is_pointwise(g);
}

/// The conv mapping d_out to dx of a stride-1 conv with a square kernel:
/// d_out correlated with the flipped, transposed weight, padding K - 1 - padding.
ConvGeometry adjoint_geometry(const ConvGeometry& g);

/// Its weight: wt_g[ci, (o, kh, kw)] = W[g * OCg + o, ci, K-1-kh, K-1-kw]
/// (for one group, a weight [C, OC, KH, KW]).
std::vector<float> adjoint_weight(const float* w, const ConvGeometry& g);

/// What the backward of one conv needs, shared by its sample ranges.
struct BackwardPlan {
  const float* d_out = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  ConvGeometry g;
  bool transposed = false;    // d_input by the adjoint conv (transposed_input_grad)
  bool dx_fresh = false;      // dx is uninitialised: assign instead of adding
  ConvGeometry gt;            // the adjoint conv (transposed route)
  const float* wt = nullptr;  // its weight (adjoint_weight)
};

/// Adds d_input (when dx) and d_weight (when dw, which receives this range's
/// sum over samples) for the samples [n_lo, n_hi).
void backward(const BackwardPlan& bp, int64_t n_lo, int64_t n_hi, float* dx, float* dw);

}  // namespace spruce::ops::gemm_conv
