// The conv tests' reference: conv2d forward and backward as the plain loops
// of the definition, summed in double, for any geometry (stride, padding,
// groups, non-square kernels) and any ConvOutput (scale, shift or bias,
// residual, ReLU). Slow on purpose: the kernels are checked against it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/ops/im2col.h"

namespace spruce::test {

/// The geometry of a conv of x [N, C, H, W] with a weight [OC, C / groups, KH, KW].
inline ops::ConvGeometry conv_geometry(int64_t N, int64_t C, int64_t OC, int64_t H, int64_t W,
                                       int64_t KH, int64_t KW, int64_t stride = 1,
                                       int64_t padding = 0, int64_t groups = 1) {
  ops::ConvGeometry g;
  g.N = N, g.C = C, g.H = H, g.W = W, g.OC = OC, g.KH = KH, g.KW = KW;
  g.stride = stride, g.padding = padding, g.groups = groups;
  g.OH = (H + 2 * padding - KH) / stride + 1;
  g.OW = (W + 2 * padding - KW) / stride + 1;
  return g;
}

/// Calls f(xi, wi, oi): x[xi] * w[wi] is a term of out[oi], for every term.
template <class F>
void for_each_conv_term(const ops::ConvGeometry& g, const F& f) {
  const int64_t Cg = g.Cg(), OCg = g.OCg();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t o = 0; o < g.OC; ++o)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t oi = ((n * g.OC + o) * g.OH + oh) * g.OW + ow;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t kh = 0; kh < g.KH; ++kh)
              for (int64_t kw = 0; kw < g.KW; ++kw) {
                const int64_t ih = oh * g.stride - g.padding + kh;
                const int64_t iw = ow * g.stride - g.padding + kw;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                const int64_t xi = ((n * g.C + (o / OCg) * Cg + ci) * g.H + ih) * g.W + iw;
                const int64_t wi = ((o * Cg + ci) * g.KH + kh) * g.KW + kw;
                f(xi, wi, oi);
              }
        }
}

/// out[n, o, p] = act(scale[o] * sum x w + shift[o] + residual[n, o, p]), in
/// double (o.shift is the bias of a plain conv).
inline std::vector<double> reference_conv(const ops::ConvGeometry& g, const float* x,
                                          const float* w, const ops::ConvOutput& o = {}) {
  std::vector<double> out(static_cast<size_t>(g.N * g.OC * g.P()), 0.0);
  for_each_conv_term(g, [&](int64_t xi, int64_t wi, int64_t oi) {
    out[static_cast<size_t>(oi)] += double(x[xi]) * double(w[wi]);
  });
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t oc = static_cast<int64_t>(i) / g.P() % g.OC;
    double v = out[i];
    if (o.scale) v *= o.scale[oc];
    if (o.shift) v += o.shift[oc];
    if (o.residual) v += o.residual[i];
    if (o.relu) v = std::max(v, 0.0);
    out[i] = v;
  }
  return out;
}

struct ReferenceGrads {
  std::vector<double> dx, dw, db;  // [N, C, H, W], [OC, C / groups, KH, KW], [OC]
};

/// The gradients of sum(d_out * (conv(x, w) + bias)) in double; dx is left
/// empty when w is null (only dw and db wanted).
inline ReferenceGrads reference_conv_backward(const ops::ConvGeometry& g, const float* x,
                                              const float* w, const float* d_out) {
  ReferenceGrads r;
  if (w) r.dx.assign(static_cast<size_t>(g.N * g.C * g.H * g.W), 0.0);
  r.dw.assign(static_cast<size_t>(g.OC * g.Kc()), 0.0);
  r.db.assign(static_cast<size_t>(g.OC), 0.0);
  for_each_conv_term(g, [&](int64_t xi, int64_t wi, int64_t oi) {
    if (w) r.dx[static_cast<size_t>(xi)] += double(d_out[oi]) * w[wi];
    r.dw[static_cast<size_t>(wi)] += double(d_out[oi]) * x[xi];
  });
  for (int64_t i = 0; i < g.N * g.OC * g.P(); ++i)
    r.db[static_cast<size_t>(i / g.P() % g.OC)] += d_out[i];
  return r;
}

}  // namespace spruce::test
