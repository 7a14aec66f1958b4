// The depthwise kernel on tiles of 8 interleaved channels (see
// conv2d_depthwise.h), for builds with AVX2 + FMA.
//
// In NCHW a depthwise tap is a shifted plane: short rows, borders, strides
// and MobileNet's 4x4 and 2x2 planes make that mostly overhead. Here 8
// channels of one sample are transposed into a tile t[i][j][8] (pixel (i, j)
// of the 8 channels is one vector): every tap of every output pixel is one
// vector load and one FMA, whatever the stride or the plane size, and
// d_weight accumulates in one register per tap (a lane per channel) without
// horizontal sums. Results go back to NCHW through the inverse transpose.
//
//   forward    out[p] = sum_t w_t * xi[pix(p) + toff_t]         (xi zero-padded)
//   d_weight   dW_t  += sum_p d[p] * xi[pix(p) + toff_t]
//   d_input    stride 1: the forward on the zero-padded d_out with the
//              flipped kernel (padding K - 1 - pad); stride > 1: each d[p]
//              scattered into a padded tile, dxi[pix(p) + toff_t] += w_t d[p]
//
// Tasks are (block of B samples, 8-channel group); B depends on shapes only,
// d_weight is summed per block into its own slot and the blocks are added in
// order, so no result depends on the thread count.
#include <algorithm>
#include <vector>

#include "../parallel.h"
#include "conv2d_depthwise.h"
#include "conv2d_lanes.h"  // defines SPRUCE_DIRECT_CONV with AVX2 + FMA

namespace spruce::ops::depthwise::tiles {

#ifdef SPRUCE_DIRECT_CONV
using ::spruce::ops::lanes::zeroed_scratch;

namespace {

struct DwPlan {
  int64_t N, C, H, W, OH, OW, KH, KW, KK, s, pad, Hp, Wp;
  int64_t groups;             // ceil(C / 8)
  int64_t B;                  // samples per block
  std::vector<int32_t> toff;  // [KK] tap offset in a padded tile, in floats
  std::vector<int32_t> xoff;  // [H * W] input pixel's offset in the padded tile, in floats

  explicit DwPlan(const ConvGeometry& g)
      : N(g.N),
        C(g.C),
        H(g.H),
        W(g.W),
        OH(g.OH),
        OW(g.OW),
        KH(g.KH),
        KW(g.KW),
        KK(g.KH * g.KW),
        s(g.stride),
        pad(g.padding) {
    Hp = H + 2 * pad, Wp = W + 2 * pad;
    groups = (C + 7) / 8;
    B = std::max<int64_t>(1, (N + 7) / 8);
    toff.resize(static_cast<size_t>(KK));
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw)
        toff[kh * KW + kw] = static_cast<int32_t>((kh * Wp + kw) * 8);
    // Precomputed: a division per pixel cost about as much as its transpose.
    xoff.resize(static_cast<size_t>(H * W));
    for (int64_t l = 0; l < H * W; ++l)
      xoff[l] = static_cast<int32_t>(((pad + l / W) * Wp + pad + l % W) * 8);
  }
  int64_t blocks() const { return (N + B - 1) / B; }
};

/// tile[(r0 + i) * tw + c0 + j][0:8] = planes[ch][i][j] for the `cn` (<= 8)
/// channels of planes [cn, rows, cols]; lanes past cn get zeros. Tile
/// positions outside are not touched.
void to_tile(const float* planes, int64_t cn, int64_t rows, int64_t cols, int64_t tw, int64_t r0,
             int64_t c0, float* tile) {
  ::spruce::ops::lanes::planes_to_lanes(planes, rows * cols, cn, rows * cols, [&](int64_t l) {
    return tile + ((r0 + l / cols) * tw + c0 + l % cols) * 8;
  });
}

/// planes[ch][i][j] (+)= tile[(r0 + i) * tw + c0 + j][ch] for ch < cn: the
/// inverse of to_tile. Assigned values are finished by `o` with the residual
/// planes at res (laid out as planes; null when o has none).
template <bool Accumulate>
void from_tile(const float* tile, int64_t tw, int64_t r0, int64_t c0, int64_t cn, int64_t rows,
               int64_t cols, float* planes, const ConvOutput& o = {}, const float* res = nullptr) {
  ::spruce::ops::lanes::lanes_to_planes<Accumulate>(
      [&](int64_t l) { return tile + ((r0 + l / cols) * tw + c0 + l % cols) * 8; }, rows * cols, cn,
      planes, rows * cols, o, res);
}

/// o[(oh * OW + ow) * 8] = init + sum_t wv[t] * xi[((oh s) Wp + ow s) * 8 + toff[t]]
/// for an OH x OW output from a padded tile of row width Wp, stride s.
template <int KK>
void dw_tile_conv(const float* xi, int64_t Wp, int64_t s, int64_t OH, int64_t OW,
                  const int32_t* toff, const __m256* wv, __m256 init, float* o) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    const float* row = xi + oh * s * Wp * 8;
    float* orow = o + oh * OW * 8;
    int64_t ow = 0;
    for (; ow + 4 <= OW; ow += 4) {  // four pixels: four independent FMA chains
      __m256 a0 = init, a1 = init, a2 = init, a3 = init;
      const float* p = row + ow * s * 8;
#pragma GCC unroll 9
      for (int t = 0; t < KK; ++t) {
        const float* q = p + toff[t];
        a0 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(q), a0);
        a1 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(q + s * 8), a1);
        a2 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(q + 2 * s * 8), a2);
        a3 = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(q + 3 * s * 8), a3);
      }
      _mm256_storeu_ps(orow + ow * 8, a0);
      _mm256_storeu_ps(orow + (ow + 1) * 8, a1);
      _mm256_storeu_ps(orow + (ow + 2) * 8, a2);
      _mm256_storeu_ps(orow + (ow + 3) * 8, a3);
    }
    for (; ow < OW; ++ow) {
      __m256 a = init;
      const float* p = row + ow * s * 8;
      for (int t = 0; t < KK; ++t) a = _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(p + toff[t]), a);
      _mm256_storeu_ps(orow + ow * 8, a);
    }
  }
}

/// acc[t] += sum over the OH x OW pixels of d[p] * xi[pix(p) + toff[t]].
template <int KK>
void dw_tile_weight(const float* xi, const float* d, int64_t Wp, int64_t s, int64_t OH, int64_t OW,
                    const int32_t* toff, __m256* acc_out) {
  __m256 acc[KK];
  for (int t = 0; t < KK; ++t) acc[t] = acc_out[t];
  // One flat pixel loop (a nested one makes g++ keep acc on the stack).
  const int64_t P = OH * OW;
  int64_t ow = 0, base = 0;
  for (int64_t p = 0; p < P; ++p) {
    const __m256 dv = _mm256_loadu_ps(d + p * 8);
    const float* q = xi + base;
#pragma GCC unroll 9
    for (int t = 0; t < KK; ++t) acc[t] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(q + toff[t]), acc[t]);
    base += s * 8;
    if (++ow == OW) ow = 0, base += (s * Wp - OW * s) * 8;
  }
  for (int t = 0; t < KK; ++t) acc_out[t] = acc[t];
}

/// dxi[pix(p) + toff[t]] += wv[t] * d[p]: the scatter form of d_input.
template <int KK>
void dw_tile_scatter(const float* d, int64_t Wp, int64_t s, int64_t OH, int64_t OW,
                     const int32_t* toff, const __m256* wv, float* dxi) {
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow) {
      const __m256 dv = _mm256_loadu_ps(d + (oh * OW + ow) * 8);
      float* q = dxi + (oh * s * Wp + ow * s) * 8;
      for (int t = 0; t < KK; ++t)
        _mm256_storeu_ps(q + toff[t], _mm256_fmadd_ps(wv[t], dv, _mm256_loadu_ps(q + toff[t])));
    }
}

/// The three tile kernels for a tap count known at compile time (3x3) or not.
struct DwKernels {
  void (*conv)(const float*, int64_t, int64_t, int64_t, int64_t, const int32_t*, const __m256*,
               __m256, float*);
  void (*weight)(const float*, const float*, int64_t, int64_t, int64_t, int64_t, const int32_t*,
                 __m256*);
  void (*scatter)(const float*, int64_t, int64_t, int64_t, int64_t, const int32_t*, const __m256*,
                  float*);
};

constexpr int kMaxTaps = 25;  // kernels up to 5x5

template <int KK>
constexpr DwKernels dw_kernels() {
  return {&dw_tile_conv<KK>, &dw_tile_weight<KK>, &dw_tile_scatter<KK>};
}

DwKernels kernels_for(int64_t taps) {
  switch (taps) {
    case 4:
      return dw_kernels<4>();
    case 9:
      return dw_kernels<9>();
    case 16:
      return dw_kernels<16>();
    case 25:
      return dw_kernels<25>();
    default:
      return dw_kernels<kMaxTaps>();  // never: supports() checks
  }
}

/// Weights of channels [c0, c0 + 8) per tap as lanes (zero past C), each
/// channel's times scale[c] when scale is given (a folded output scale);
/// flipped (tap t -> KK - 1 - t) for the gather form of d_input.
void tap_vectors(const float* w, const DwPlan& d, int64_t c0, bool flipped, __m256* wv,
                 const float* scale = nullptr) {
  for (int64_t t = 0; t < d.KK; ++t) {
    alignas(32) float lanes[8];
    for (int64_t j = 0; j < 8; ++j) {
      const int64_t c = c0 + j;
      lanes[j] =
          c < d.C ? w[c * d.KK + (flipped ? d.KK - 1 - t : t)] * (scale ? scale[c] : 1.f) : 0.f;
    }
    wv[t] = _mm256_load_ps(lanes);
  }
}

/// tap_vectors() of every channel group, [groups][KK], computed once per
/// call: the fused separable pair runs a chunk of one or two samples per
/// call, too few to spread building them per task.
struct Tap {
  __m256 v;
};
std::vector<Tap> scaled_taps(const float* w, const DwPlan& d, const float* scale) {
  std::vector<Tap> taps(static_cast<size_t>(d.groups * d.KK));
  for (int64_t gr = 0; gr < d.groups; ++gr) {
    __m256 wv[kMaxTaps];
    tap_vectors(w, d, gr * 8, false, wv, scale);
    for (int64_t t = 0; t < d.KK; ++t) taps[gr * d.KK + t].v = wv[t];
  }
  return taps;
}

std::vector<float>& dw_scratch(int i) {
  thread_local std::vector<float> bufs[4];
  return bufs[i];
}

}  // namespace

bool supports(const ConvGeometry& g) {
  const int64_t taps = g.KH * g.KW;
  return g.groups == g.C && g.OC == g.C && g.C > 1 && g.padding < g.KH && g.padding < g.KW &&
         (taps == 4 || taps == 9 || taps == 16 || taps == 25) && g.KH == g.KW;
}

namespace {

/// The forward over (block of samples, channel group) tasks; store(n, c0,
/// cn, oi) writes the tile oi [OH * OW][8] of sample n's channels [c0, c0 +
/// cn) where the caller wants it.
template <class Store>
void run_forward(const float* x, const float* w, const ConvOutput& o, const DwPlan& d,
                 const Store& store) {
  const DwKernels k = kernels_for(d.KK);
  const int64_t HW = d.H * d.W, P = d.OH * d.OW;
  const int64_t tasks = d.blocks() * d.groups;
  const std::vector<Tap> taps = scaled_taps(w, d, o.scale);
  parallel_for(
      0, tasks, std::max<int64_t>(1, 16384 / (d.B * 8 * (HW + P))), [&](int64_t lo, int64_t hi) {
        float* xi = zeroed_scratch(dw_scratch(0), d.Hp * d.Wp * 8);
        float* oi = zeroed_scratch(dw_scratch(1), P * 8);
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t gr = task % d.groups, n0 = task / d.groups * d.B;
          const int64_t c0 = gr * 8, cn = std::min<int64_t>(8, d.C - c0);
          __m256 wv[kMaxTaps];
          for (int64_t t = 0; t < d.KK; ++t) wv[t] = taps[gr * d.KK + t].v;
          alignas(32) float b[8] = {};
          for (int64_t j = 0; j < cn; ++j) b[j] = o.shift ? o.shift[c0 + j] : 0.f;
          const __m256 init = _mm256_load_ps(b);
          for (int64_t n = n0; n < std::min(d.N, n0 + d.B); ++n) {
            ::spruce::ops::lanes::planes_to_lanes(x + (n * d.C + c0) * HW, HW, cn, HW,
                                                  [&](int64_t l) { return xi + d.xoff[l]; });
            k.conv(xi, d.Wp, d.s, d.OH, d.OW, d.toff.data(), wv, init, oi);
            store(n, c0, cn, oi);
          }
        }
      });
}

}  // namespace

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out) {
  const DwPlan d(g);
  const int64_t P = d.OH * d.OW;
  run_forward(x, w, o, d, [&](int64_t n, int64_t c0, int64_t cn, const float* oi) {
    const int64_t at = (n * d.C + c0) * P;
    ::spruce::ops::lanes::lanes_to_planes<false>([&](int64_t l) { return oi + l * 8; }, P, cn,
                                                 out + at, P, o,
                                                 o.residual ? o.residual + at : nullptr);
  });
}

void forward_rows(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                  float* out, int64_t ld) {
  const DwPlan d(g);
  const int64_t P = d.OH * d.OW;
  run_forward(x, w, o, d, [&](int64_t n, int64_t c0, int64_t cn, const float* oi) {
    // The tile's pixels are already rows of channels: copied, not transposed.
    float* row = out + n * P * ld + c0;
    for (int64_t p = 0; p < P; ++p, row += ld) {
      const __m256 v = ::spruce::ops::lanes::finish8(o, _mm256_loadu_ps(oi + p * 8), nullptr, 0);
      if (cn == 8) {
        _mm256_storeu_ps(row, v);
      } else {
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        std::copy(t, t + cn, row);
      }
    }
  });
}

void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw) {
  const DwPlan d(g);
  const DwKernels k = kernels_for(d.KK);
  const int64_t HW = d.H * d.W, P = d.OH * d.OW, NB = d.blocks();
  // d_input, stride 1: the forward kernel on d_out zero-padded by KH-1-pad.
  const int64_t gp = d.KH - 1 - d.pad;
  const int64_t gHp = d.OH + 2 * gp, gWp = d.OW + 2 * gp;
  std::vector<int32_t> gtoff(static_cast<size_t>(d.KK));
  for (int64_t kh = 0; kh < d.KH; ++kh)
    for (int64_t kw = 0; kw < d.KW; ++kw)
      gtoff[kh * d.KW + kw] = static_cast<int32_t>((kh * gWp + kw) * 8);
  std::vector<float> partial(dw ? static_cast<size_t>(NB * d.groups * d.KK * 8) : 0, 0.f);
  const int64_t tasks = NB * d.groups;
  parallel_for(
      0, tasks, std::max<int64_t>(1, 8192 / (d.B * 8 * (HW + P))), [&](int64_t lo, int64_t hi) {
        float* xi = zeroed_scratch(dw_scratch(0), d.Hp * d.Wp * 8);
        float* di = zeroed_scratch(dw_scratch(1), P * 8);
        // Stride 1: padded d_out and the dx tile; stride > 1: the scatter tile.
        float* gi = zeroed_scratch(dw_scratch(2), d.s == 1 ? gHp * gWp * 8 : d.Hp * d.Wp * 8);
        float* xo = zeroed_scratch(dw_scratch(3), HW * 8);
        __m256 wv[kMaxTaps], acc[kMaxTaps];
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t gr = task % d.groups, nb = task / d.groups, n0 = nb * d.B;
          const int64_t c0 = gr * 8, cn = std::min<int64_t>(8, d.C - c0);
          if (dx) tap_vectors(w, d, c0, d.s == 1, wv);
          for (int64_t t = 0; t < d.KK; ++t) acc[t] = _mm256_setzero_ps();
          for (int64_t n = n0; n < std::min(d.N, n0 + d.B); ++n) {
            const float* dn = d_out + (n * d.C + c0) * P;
            to_tile(dn, cn, d.OH, d.OW, d.OW, 0, 0, di);
            if (dw) {
              to_tile(x + (n * d.C + c0) * HW, cn, d.H, d.W, d.Wp, d.pad, d.pad, xi);
              k.weight(xi, di, d.Wp, d.s, d.OH, d.OW, d.toff.data(), acc);
            }
            if (!dx) continue;
            float* dxn = dx + (n * d.C + c0) * HW;
            if (d.s == 1) {
              to_tile(dn, cn, d.OH, d.OW, gWp, gp, gp, gi);
              k.conv(gi, gWp, 1, d.H, d.W, gtoff.data(), wv, _mm256_setzero_ps(), xo);
              if (dx_fresh)
                from_tile<false>(xo, d.W, 0, 0, cn, d.H, d.W, dxn);
              else
                from_tile<true>(xo, d.W, 0, 0, cn, d.H, d.W, dxn);
            } else {
              std::fill(gi, gi + d.Hp * d.Wp * 8, 0.f);
              k.scatter(di, d.Wp, d.s, d.OH, d.OW, d.toff.data(), wv, gi);
              if (dx_fresh)
                from_tile<false>(gi, d.Wp, d.pad, d.pad, cn, d.H, d.W, dxn);
              else
                from_tile<true>(gi, d.Wp, d.pad, d.pad, cn, d.H, d.W, dxn);
            }
          }
          if (dw)
            for (int64_t t = 0; t < d.KK; ++t)
              _mm256_storeu_ps(partial.data() + ((nb * d.groups + gr) * d.KK + t) * 8, acc[t]);
        }
      });
  if (!dw) return;
  for (int64_t c = 0; c < d.C; ++c)  // blocks added in order: independent of threads
    for (int64_t t = 0; t < d.KK; ++t) {
      float sum = 0.f;
      for (int64_t nb = 0; nb < NB; ++nb)
        sum += partial[static_cast<size_t>(((nb * d.groups + c / 8) * d.KK + t) * 8 + c % 8)];
      dw[c * d.KK + t] += sum;
    }
}

#else  // no AVX2 + FMA: depthwise::forward/backward take the portable kernel

bool supports(const ConvGeometry&) { return false; }
void forward(const float*, const float*, const ConvOutput&, const ConvGeometry&, float*) {}
void forward_rows(const float*, const float*, const ConvOutput&, const ConvGeometry&, float*,
                  int64_t) {}
void backward(const float*, const float*, const float*, const ConvGeometry&, float*, bool, float*) {
}

#endif

}  // namespace spruce::ops::depthwise::tiles
