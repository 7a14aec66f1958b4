// im2col / col2im over a chunk of samples: the lowering that turns a dense or
// grouped convolution into one large GEMM per group (see core/ops/conv2d.cpp).
//
// For the samples [n0, n0 + nc) the column matrix is
//   col [C * KH * KW, nc * P],  P = H_out * W_out,
// where row (c, kh, kw) and column (n - n0) * P + oh * W_out + ow hold
//   x[n, c, oh * stride - padding + kh, ow * stride - padding + kw]
// (zero outside the image). Rows of one group are consecutive, so group g is
// the row block [g * C/groups * KH * KW, (g + 1) * C/groups * KH * KW), and
// the whole chunk shares one large GEMM N dimension (nc * P) instead of nc
// small per-sample GEMMs.
//
// A 3x3 stride-2 conv with padding 1 on an even plane (ResNet's downsampling
// convs) reads every other pixel: tap (kh, kw) only ever sees the input rows
// of one parity and the columns of one parity. Both functions then split each
// input plane into its four phase planes (rows and columns even/odd, each
// OH x OW) once, and a tap becomes a shifted copy of one phase plane, the
// contiguous row copies of a stride-1 conv, instead of a strided gather per
// output pixel (see phase_lowering).
//
// Header-only. im2col_chunk / col2im_chunk serve the GEMM path
// (conv2d_gemm.cpp); ConvGeometry and ConvOutput are the vocabulary that
// every conv kernel shares.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "../parallel.h"
#include "scratch.h"

namespace spruce::ops {

/// Sizes of one conv2d call: x [N, C, H, W], weight [OC, C / groups, KH, KW],
/// out [N, OC, OH, OW].
struct ConvGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t OC = 0, KH = 0, KW = 0;
  int64_t stride = 1, padding = 0, groups = 1;
  int64_t OH = 0, OW = 0;

  int64_t P() const { return OH * OW; }          // output pixels per plane
  int64_t Cg() const { return C / groups; }      // input channels per group
  int64_t OCg() const { return OC / groups; }    // output channels per group
  int64_t Kc() const { return Cg() * KH * KW; }  // GEMM K: col rows per group
};

struct ChannelSums;  // channel_sums.h

/// What a conv forward does to each output value as it writes it:
///   out[n, o, p] = act(scale[o] * conv[n, o, p] + shift[o] + residual[n, o, p])
/// with act = max(., 0) when relu, else the identity; a null scale is 1, a
/// null shift 0, a null residual nothing. The plain conv2d sets shift = bias
/// only; conv2d_fused (conv2d.h) uses all of it. residual [N, OC, OH, OW].
struct ConvOutput {
  const float* scale = nullptr;
  const float* shift = nullptr;
  const float* residual = nullptr;
  bool relu = false;
  /// Where the Winograd kernel adds each sample's per-channel sums of the
  /// output (channel_sums.h); null for none. Only for a plain conv (no
  /// scale, residual or ReLU); other kernels never see it.
  ChannelSums* sums = nullptr;

  /// Whether anything beyond the shift (a bias) is applied.
  bool fused() const { return scale || residual || relu; }
  /// The residual add and the activation of one value, whose residual is
  /// res[i] (res is read only when there is a residual).
  float finish(float v, const float* res, int64_t i) const {
    if (residual) v += res[i];
    return relu ? (v > 0.f ? v : 0.f) : v;
  }
  /// d[p] = the transform of channel r applied to s[p], p < len, with the
  /// residual res[p]: s[p] + shift[r] for a plain conv (a bias), else
  /// finish(scale[r] s[p] + shift[r]). s may be d (in place).
  void finish_plane(int64_t r, const float* s, float* d, const float* res, int64_t len) const {
    const float b = shift ? shift[r] : 0.f;
    if (!fused()) {
      for (int64_t p = 0; p < len; ++p) d[p] = s[p] + b;
      return;
    }
    const float a = scale ? scale[r] : 1.f;
    for (int64_t p = 0; p < len; ++p) d[p] = finish(s[p] * a + b, res, p);
  }
};

/// The output positions o in [0, out_size) whose input position
/// o * stride - padding + k lies inside [0, size), as [lo, hi).
inline std::pair<int64_t, int64_t> valid_range(int64_t k, int64_t size, int64_t out_size,
                                               int64_t stride, int64_t padding) {
  // Smallest o with o * stride >= bound, for any sign of bound.
  auto first_at_least = [stride](int64_t bound) {
    return bound <= 0 ? int64_t{0} : (bound + stride - 1) / stride;
  };
  const int64_t lo = std::min(out_size, first_at_least(padding - k));
  const int64_t hi = std::clamp(first_at_least(size + padding - k), lo, out_size);
  return {lo, hi};
}

/// One im2col strip [OH, OW] of tap (kh, kw) for a stride-1 conv whose output
/// is as wide as its input ("same" padding, e.g. 3x3 with padding 1): then
/// strip[oh, ow] = plane[(oh + kh - padding) * W + ow + (kw - padding)], so
/// the valid rows are one contiguous copy of the plane, after which only the
/// |kw - padding| columns that wrapped around a row edge are zeroed.
inline void same_width_strip(const float* plane, const ConvGeometry& g, int64_t kh, int64_t kw,
                             float* dst) {
  const int64_t W = g.W, shift = kw - g.padding;
  const int64_t oh_lo = std::clamp<int64_t>(g.padding - kh, 0, g.OH);
  const int64_t oh_hi = std::clamp<int64_t>(g.H + g.padding - kh, oh_lo, g.OH);
  std::fill(dst, dst + oh_lo * W, 0.f);
  std::fill(dst + oh_hi * W, dst + g.OH * W, 0.f);
  if (oh_hi == oh_lo) return;
  // Flat source range, clipped to the plane (what falls outside is a wrapped column).
  const int64_t begin = (oh_lo + kh - g.padding) * W + shift;
  const int64_t end = begin + (oh_hi - oh_lo) * W;
  const int64_t from = std::max<int64_t>(begin, 0), to = std::min(end, g.H * W);
  float* d = dst + oh_lo * W;
  std::memcpy(d + (from - begin), plane + from, static_cast<size_t>(to - from) * sizeof(float));
  for (int64_t oh = 0; oh < oh_hi - oh_lo; ++oh) {
    float* row = d + oh * W;
    if (shift < 0) std::fill(row, row + std::min(-shift, W), 0.f);
    if (shift > 0) std::fill(row + std::max<int64_t>(W - shift, 0), row + W, 0.f);
  }
}

/// Whether g lowers through phase planes (see the top of this file): 3x3,
/// stride 2, padding 1, even H and W, so OH = H / 2 and OW = W / 2.
inline bool phase_lowering(const ConvGeometry& g) {
  return g.stride == 2 && g.KH == 3 && g.KW == 3 && g.padding == 1 && g.H % 2 == 0 &&
         g.W % 2 == 0 && g.H > 0 && g.W > 0;
}

namespace phase {

/// The stride-1 "same" geometry of one OH x OW phase plane: a tap's shift of
/// -1 or 0 pixels is same_width_strip's kernel offset 0 or 1 (padding 1).
inline ConvGeometry plane_geometry(const ConvGeometry& g) {
  ConvGeometry p;
  p.H = p.OH = g.OH, p.W = p.OW = g.OW, p.KH = p.KW = 3, p.padding = 1;
  return p;
}
/// Tap k (0..2) along one axis reads input 2 o - 1 + k: parity 1 shifted by
/// -1 for k = 0, parity 0 for k = 1, parity 1 for k = 2.
inline int64_t parity(int64_t k) { return k == 1 ? 0 : 1; }
inline int64_t offset(int64_t k) { return k == 0 ? 0 : 1; }  // as a same_width_strip tap
/// The phase plane a tap reads, of the four [2 * row parity + column parity].
inline int64_t of_tap(int64_t kh, int64_t kw) { return 2 * parity(kh) + parity(kw); }

/// ph[2 py + px][a, b] = plane[2 a + py, 2 b + px] for an even H x W plane.
inline void split(const float* plane, int64_t H, int64_t W, float* ph) {
  const int64_t oh = H / 2, ow = W / 2, P = oh * ow;
  for (int64_t a = 0; a < oh; ++a)
    for (int64_t py = 0; py < 2; ++py) {
      const float* __restrict r = plane + (2 * a + py) * W;
      float* __restrict e = ph + (2 * py) * P + a * ow;
      float* __restrict o = ph + (2 * py + 1) * P + a * ow;
      for (int64_t b = 0; b < ow; ++b) e[b] = r[2 * b], o[b] = r[2 * b + 1];
    }
}

/// The calling thread's four phase planes of P floats each.
inline float* planes(int64_t P) {
  thread_local Scratch s;
  return s.get(4 * P);
}

/// plane (+)= the interleaved phase planes: split's transpose.
inline void merge(const float* ph, int64_t H, int64_t W, bool assign, float* plane) {
  const int64_t oh = H / 2, ow = W / 2, P = oh * ow;
  for (int64_t a = 0; a < oh; ++a)
    for (int64_t py = 0; py < 2; ++py) {
      float* __restrict r = plane + (2 * a + py) * W;
      const float* __restrict e = ph + (2 * py) * P + a * ow;
      const float* __restrict o = ph + (2 * py + 1) * P + a * ow;
      if (assign)
        for (int64_t b = 0; b < ow; ++b) r[2 * b] = e[b], r[2 * b + 1] = o[b];
      else
        for (int64_t b = 0; b < ow; ++b) r[2 * b] += e[b], r[2 * b + 1] += o[b];
    }
}

/// dst (a phase plane, geometry p) += the strip src of tap offsets (kh, kw):
/// same_width_strip's transpose.
inline void add_strip(const float* src, const ConvGeometry& p, int64_t kh, int64_t kw, float* dst) {
  const int64_t W = p.W, sh = kh - 1, sw = kw - 1;  // -1 or 0
  const int64_t lo = -sw;                           // the first column with a source pixel
  for (int64_t oh = -sh; oh < p.OH; ++oh) {
    const float* __restrict s = src + oh * W;
    float* __restrict d = dst + (oh + sh) * W + sw;
    for (int64_t ow = lo; ow < W; ++ow) d[ow] += s[ow];
  }
}

}  // namespace phase

/// Writes col [C * KH * KW, nc * P] for samples [n0, n0 + nc) of x [N, C, H, W].
inline void im2col_chunk(const float* x, const ConvGeometry& g, int64_t n0, int64_t nc,
                         float* col) {
  const int64_t P = g.P(), cols = nc * P, HW = g.H * g.W;
  const int64_t rows = g.C * g.KH * g.KW;
  if (phase_lowering(g)) {  // one task = one (sample, channel) plane's nine rows
    const ConvGeometry pg = phase::plane_geometry(g);
    parallel_for(0, nc * g.C, std::max<int64_t>(1, 4096 / (9 * P)), [&](int64_t lo, int64_t hi) {
      float* ph = phase::planes(P);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t n = t / g.C, c = t % g.C;
        phase::split(x + ((n0 + n) * g.C + c) * HW, g.H, g.W, ph);
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw)
            same_width_strip(ph + phase::of_tap(kh, kw) * P, pg, phase::offset(kh),
                             phase::offset(kw), col + ((c * 3 + kh) * 3 + kw) * cols + n * P);
      }
    });
    return;
  }
  // One task = one (row, sample) strip of P values; ~4K values per task at least.
  parallel_for(0, rows * nc, std::max<int64_t>(1, 4096 / P), [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t r = t / nc, n = t % nc;
      const int64_t kw = r % g.KW, kh = (r / g.KW) % g.KH, c = r / (g.KW * g.KH);
      const float* plane = x + ((n0 + n) * g.C + c) * HW;
      float* dst = col + r * cols + n * P;
      if (g.stride == 1 && g.OW == g.W) {
        same_width_strip(plane, g, kh, kw, dst);
        continue;
      }
      const auto [ow_lo, ow_hi] = valid_range(kw, g.W, g.OW, g.stride, g.padding);
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        float* d = dst + oh * g.OW;
        const int64_t ih = oh * g.stride - g.padding + kh;
        if (ih < 0 || ih >= g.H) {
          std::fill(d, d + g.OW, 0.f);
          continue;
        }
        const float* row = plane + ih * g.W;
        const int64_t shift = kw - g.padding;  // iw = ow * stride + shift
        std::fill(d, d + ow_lo, 0.f);
        if (g.stride == 1) {
          std::memcpy(d + ow_lo, row + ow_lo + shift,
                      static_cast<size_t>(ow_hi - ow_lo) * sizeof(float));
        } else {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = row[ow * g.stride + shift];
        }
        std::fill(d + ow_hi, d + g.OW, 0.f);
      }
    }
  });
}

/// Adds col [C * KH * KW, nc * P] back into dx [N, C, H, W] for samples
/// [n0, n0 + nc), the transpose of im2col_chunk; with assign, the planes of
/// those samples are overwritten instead (zeroed by the task that sums them,
/// while they are in its cache). One task owns one (n, c) plane, so the sums
/// run in a fixed order whatever the thread count.
inline void col2im_chunk(const float* col, const ConvGeometry& g, int64_t n0, int64_t nc,
                         bool assign, float* dx) {
  const int64_t P = g.P(), cols = nc * P, HW = g.H * g.W;
  const int64_t taps = g.KH * g.KW;
  const int64_t grain = std::max<int64_t>(1, 4096 / (taps * P));
  if (phase_lowering(g)) {  // the taps summed into phase planes, merged into dx once
    const ConvGeometry pg = phase::plane_geometry(g);
    parallel_for(0, nc * g.C, grain, [&](int64_t lo, int64_t hi) {
      float* ph = phase::planes(P);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t n = t / g.C, c = t % g.C;
        std::fill(ph, ph + 4 * P, 0.f);
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw)
            phase::add_strip(col + ((c * 3 + kh) * 3 + kw) * cols + n * P, pg, phase::offset(kh),
                             phase::offset(kw), ph + phase::of_tap(kh, kw) * P);
        phase::merge(ph, g.H, g.W, assign, dx + ((n0 + n) * g.C + c) * HW);
      }
    });
    return;
  }
  parallel_for(0, nc * g.C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t n = t / g.C, c = t % g.C;
      float* plane = dx + ((n0 + n) * g.C + c) * HW;
      if (assign) std::fill(plane, plane + HW, 0.f);
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const float* src = col + ((c * g.KH + kh) * g.KW + kw) * cols + n * P;
          const auto [ow_lo, ow_hi] = valid_range(kw, g.W, g.OW, g.stride, g.padding);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t ih = oh * g.stride - g.padding + kh;
            if (ih < 0 || ih >= g.H) continue;
            float* row = plane + ih * g.W;
            const int64_t shift = kw - g.padding;
            const float* s = src + oh * g.OW;
            if (g.stride == 1) {
              for (int64_t ow = ow_lo; ow < ow_hi; ++ow) row[ow + shift] += s[ow];
            } else {
              for (int64_t ow = ow_lo; ow < ow_hi; ++ow) row[ow * g.stride + shift] += s[ow];
            }
          }
        }
      }
    }
  });
}

}  // namespace spruce::ops
