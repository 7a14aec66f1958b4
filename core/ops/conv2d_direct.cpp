// Direct dense conv kernels (see conv2d_direct.h).
//
// Layout. A sample's input is copied into zero-padded planes xp[c] of
// Hp x Wp floats (Hp = H + 2 pad, Wp = W + 2 pad), one every PS floats
// (PS >= Hp Wp + 8, so an 8-float load that starts inside a plane stays
// inside the buffer). Output pixel (oh, ow) of a stride-s conv has grid
// position q = oh s Wp + ow s, and its input under tap k = (c, kh, kw) is
// xp[q + koff[k]] with koff[k] = c PS + kh Wp + kw.
//
// forward / input_grad: out[oc, p] = sum_k W[oc, k] xp[q(p) + koff[k]] on a
// 6 x 16 register block (six consecutive output pixels, 16 output
// channels): per tap, 2 loads of weights packed [oc block][k][16], 6
// broadcasts of input, 12 FMAs. The vector lanes are output channels, so no
// lane is wasted on rows of 28, 14 or 7 pixels and any stride works. The six
// pixels lie on at most two output rows, each a run in steps of s, so each
// broadcast is one instruction (base register + tap offset + constant): with
// six separate pixel pointers the loop was issue-bound at ~70% of the FMA
// peak. The block goes to a small [pixel][16] buffer and back to NCHW by 8x8
// transposes. input_grad is the same kernel on the zero-padded output
// gradient with the flipped, transposed weight (padding KH - 1 - pad), which
// is the adjoint of a stride-1 conv.
//
// A fused forward (ConvOutput) multiplies the packed weights by its
// per-channel scale, starts the accumulators at its shift, and adds the
// residual and applies the ReLU in the 8x8 transposes back to NCHW.
//
// weight_grad: dW[oc, k] = sum over samples and pixels p of xp[q(p) + koff[k]]
// d_out[oc, p], with each sample's d_out transposed to [P, OC] so that output
// channels are contiguous: a 6 x 16 block (6 taps, 16 output channels) in
// registers, per pixel 2 loads of gradient, 6 broadcasts of input, 12 FMAs.
// The blocks are kept across the samples of the call in a buffer; every sum
// runs in a fixed order (sample, then pixel).
//
// Threads: a call handles a range of samples. Called from outside a parallel
// region (one range of few samples, e.g. per-sample Fisher gradients), it
// splits output-channel blocks (and, forward, pixel ranges) over the pool. Every output value
// and dW element is computed by one task in a fixed order.
#include "conv2d_direct.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../parallel.h"
#include "conv2d_lanes.h"  // defines SPRUCE_DIRECT_CONV with AVX2 + FMA

namespace spruce::ops::direct {

#ifdef SPRUCE_DIRECT_CONV
using lanes::untranspose;
using lanes::zeroed_scratch;

namespace {

/// A conv of a C x H x W input padded by `pad`, kernel KH x KW, stride s.
struct Plan {
  int64_t C, H, W, KH, KW, pad, s;
  int64_t Hp, Wp, PS, OH, OW, K;
  std::vector<int32_t> koff;  // [K], k = (c * KH + kh) * KW + kw
  std::vector<int32_t> pixq;  // [OH * OW] grid position of each output pixel

  // A 1x1 stride-1 unpadded conv reads the sample in place (planes of H W
  // floats, no copy), and its pixels are one run: q(p) = p.
  bool in_place = false;

  Plan(int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t p, int64_t stride = 1)
      : C(c), H(h), W(w), KH(kh), KW(kw), pad(p), s(stride) {
    Hp = H + 2 * pad, Wp = W + 2 * pad;
    OH = (Hp - KH) / s + 1, OW = (Wp - KW) / s + 1;
    in_place = KH == 1 && KW == 1 && pad == 0 && s == 1;
    PS = in_place ? H * W : (Hp * Wp + 8 + 7) / 8 * 8;
    K = C * KH * KW;
    koff.resize(static_cast<size_t>(K));
    for (int64_t ci = 0; ci < C; ++ci)
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j)
          koff[static_cast<size_t>((ci * KH + i) * KW + j)] =
              static_cast<int32_t>(ci * PS + i * Wp + j);
    pixq.resize(static_cast<size_t>(OH * OW));
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        pixq[static_cast<size_t>(oh * OW + ow)] = static_cast<int32_t>(oh * s * Wp + ow * s);
  }

  int64_t P() const { return OH * OW; }
  int64_t padded_floats() const { return C * PS; }

  /// Copies one sample [C, H, W] into the interior of the padded planes. The
  /// border is never written, so it stays as zeroed by the caller.
  void fill(const float* __restrict x, float* __restrict xp) const {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih) {
        const float* __restrict src = x + (c * H + ih) * W;
        float* __restrict dst = xp + c * PS + (ih + pad) * Wp + pad;
        for (int64_t j = 0; j < W; ++j) dst[j] = src[j];
      }
  }
};

std::vector<float>& padded_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

std::vector<float>& transposed_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

std::vector<float>& tile_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

std::vector<float>& accumulator_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

/// Writes a 6x16 accumulator tile (pixel-major) to T[96].
__attribute__((always_inline)) inline void store_tile6x16(float* T, __m256 c00, __m256 c01,
                                                          __m256 c10, __m256 c11, __m256 c20,
                                                          __m256 c21, __m256 c30, __m256 c31,
                                                          __m256 c40, __m256 c41, __m256 c50,
                                                          __m256 c51) {
  const __m256 c[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int i = 0; i < 12; ++i) _mm256_storeu_ps(T + 8 * i, c[i]);
}

/// T[i][0:16] = init + sum_k xp[q[i] + koff[k]] * wp[k][0:16] for six
/// output pixels i (grid positions q) and one block of 16 output channels:
/// per tap two weight vectors, six broadcasts of input, 12 FMAs.
__attribute__((noinline)) void tile6x16(const float* xp, const int32_t* q, const int32_t* koff,
                                        int64_t K, const float* wp, const float* init16, float* T) {
  const __m256 i0 = _mm256_loadu_ps(init16), i1 = _mm256_loadu_ps(init16 + 8);
  __m256 c00 = i0, c01 = i1, c10 = i0, c11 = i1, c20 = i0, c21 = i1;
  __m256 c30 = i0, c31 = i1, c40 = i0, c41 = i1, c50 = i0, c51 = i1;
  const float *x0 = xp + q[0], *x1 = xp + q[1], *x2 = xp + q[2];
  const float *x3 = xp + q[3], *x4 = xp + q[4], *x5 = xp + q[5];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t off = koff[k];
    const __m256 w0 = _mm256_loadu_ps(wp + 16 * k), w1 = _mm256_loadu_ps(wp + 16 * k + 8);
    __m256 a = _mm256_broadcast_ss(x0 + off);
    c00 = _mm256_fmadd_ps(a, w0, c00), c01 = _mm256_fmadd_ps(a, w1, c01);
    a = _mm256_broadcast_ss(x1 + off);
    c10 = _mm256_fmadd_ps(a, w0, c10), c11 = _mm256_fmadd_ps(a, w1, c11);
    a = _mm256_broadcast_ss(x2 + off);
    c20 = _mm256_fmadd_ps(a, w0, c20), c21 = _mm256_fmadd_ps(a, w1, c21);
    a = _mm256_broadcast_ss(x3 + off);
    c30 = _mm256_fmadd_ps(a, w0, c30), c31 = _mm256_fmadd_ps(a, w1, c31);
    a = _mm256_broadcast_ss(x4 + off);
    c40 = _mm256_fmadd_ps(a, w0, c40), c41 = _mm256_fmadd_ps(a, w1, c41);
    a = _mm256_broadcast_ss(x5 + off);
    c50 = _mm256_fmadd_ps(a, w0, c50), c51 = _mm256_fmadd_ps(a, w1, c51);
  }
  store_tile6x16(T, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
}

/// tile6x16 for six consecutive output pixels on at most two output rows,
/// stride S: the first A pixels start at grid position qa, the other 6 - A
/// at qb (the next row), each run in steps of S. Every broadcast is then a
/// base register plus the tap offset plus a constant, one instruction; the
/// loop would otherwise be issue-bound rather than FMA-bound. With AVX-512
/// the 16 channels are one zmm register: per tap one weight load and six
/// FMAs with an embedded broadcast (7 instructions instead of 20), the same
/// lane-by-lane sums, so the results are bit-identical; a few percent faster
/// on the 2-core Zen 4 we measure on.
template <int S, int A>
__attribute__((noinline)) void tile6x16_rows(const float* xp, int32_t qa, int32_t qb,
                                             const int32_t* koff, int64_t K, const float* wp,
                                             const float* init16, float* T) {
#ifdef __AVX512F__
  __m512 c[6];
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) c[i] = _mm512_loadu_ps(init16);
  const float* xa = xp + qa;
  const float* xb = xp + qb;
  for (int64_t k = 0; k < K; ++k) {
    const float* pa = xa + koff[k];
    const float* pb = xb + koff[k];
    const __m512 w = _mm512_loadu_ps(wp + 16 * k);
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {  // unrolled: each pixel's address is pa or pb + a constant
      const float* x = i < A ? pa + i * S : pb + (i - A) * S;
      c[i] = _mm512_fmadd_ps(_mm512_set1_ps(*x), w, c[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) _mm512_storeu_ps(T + 16 * i, c[i]);
#else
  const __m256 i0 = _mm256_loadu_ps(init16), i1 = _mm256_loadu_ps(init16 + 8);
  __m256 c00 = i0, c01 = i1, c10 = i0, c11 = i1, c20 = i0, c21 = i1;
  __m256 c30 = i0, c31 = i1, c40 = i0, c41 = i1, c50 = i0, c51 = i1;
  const float* xa = xp + qa;
  const float* xb = xp + qb;
#define SPRUCE_PX(i) ((i) < A ? xa + off + (i)*S : xb + off + ((i)-A) * S)
  for (int64_t k = 0; k < K; ++k) {
    const int64_t off = koff[k];
    const __m256 w0 = _mm256_loadu_ps(wp + 16 * k), w1 = _mm256_loadu_ps(wp + 16 * k + 8);
    __m256 a = _mm256_broadcast_ss(SPRUCE_PX(0));
    c00 = _mm256_fmadd_ps(a, w0, c00), c01 = _mm256_fmadd_ps(a, w1, c01);
    a = _mm256_broadcast_ss(SPRUCE_PX(1));
    c10 = _mm256_fmadd_ps(a, w0, c10), c11 = _mm256_fmadd_ps(a, w1, c11);
    a = _mm256_broadcast_ss(SPRUCE_PX(2));
    c20 = _mm256_fmadd_ps(a, w0, c20), c21 = _mm256_fmadd_ps(a, w1, c21);
    a = _mm256_broadcast_ss(SPRUCE_PX(3));
    c30 = _mm256_fmadd_ps(a, w0, c30), c31 = _mm256_fmadd_ps(a, w1, c31);
    a = _mm256_broadcast_ss(SPRUCE_PX(4));
    c40 = _mm256_fmadd_ps(a, w0, c40), c41 = _mm256_fmadd_ps(a, w1, c41);
    a = _mm256_broadcast_ss(SPRUCE_PX(5));
    c50 = _mm256_fmadd_ps(a, w0, c50), c51 = _mm256_fmadd_ps(a, w1, c51);
  }
#undef SPRUCE_PX
  store_tile6x16(T, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51);
#endif
}

using TileFn = void (*)(const float*, int32_t, int32_t, const int32_t*, int64_t, const float*,
                        const float*, float*);

/// The two-row tile kernel for stride s (1 or 2) and A pixels on the first
/// row (1..6), or null.
TileFn rows_kernel(int64_t s, int64_t A) {
  static constexpr TileFn k1[6] = {tile6x16_rows<1, 1>, tile6x16_rows<1, 2>, tile6x16_rows<1, 3>,
                                   tile6x16_rows<1, 4>, tile6x16_rows<1, 5>, tile6x16_rows<1, 6>};
  static constexpr TileFn k2[6] = {tile6x16_rows<2, 1>, tile6x16_rows<2, 2>, tile6x16_rows<2, 3>,
                                   tile6x16_rows<2, 4>, tile6x16_rows<2, 5>, tile6x16_rows<2, 6>};
  if (A < 1 || A > 6) return nullptr;
  return s == 1 ? k1[A - 1] : s == 2 ? k2[A - 1] : nullptr;
}

/// Weights packed for tile6x16 (blocks of 16 output channels), with the
/// initial value (shift or 0) of each block's accumulators.
struct PackedWeights {
  int64_t cout = 0, K = 0, blocks = 0;
  std::vector<float> w;     // [blocks][K][16], w(o, k) (zero past cout)
  std::vector<float> init;  // [blocks][16]
};

/// Packs w(o, k) * scale[o] (scale null: 1) with start values shift[o]
/// (null: 0): a per-channel affine map of the output folded into the conv.
template <class W>
PackedWeights pack16(int64_t cout, int64_t K, const W& w, const float* scale, const float* shift) {
  PackedWeights pw;
  pw.cout = cout, pw.K = K, pw.blocks = (cout + 15) / 16;
  pw.w.assign(static_cast<size_t>(pw.blocks * K * 16), 0.f);
  pw.init.assign(static_cast<size_t>(pw.blocks * 16), 0.f);
  for (int64_t o = 0; o < cout; ++o) {
    const float a = scale ? scale[o] : 1.f;
    for (int64_t k = 0; k < K; ++k)
      pw.w[static_cast<size_t>(((o / 16) * K + k) * 16 + o % 16)] = w(o, k) * a;
    if (shift) pw.init[static_cast<size_t>(o)] = shift[o];
  }
  return pw;
}

/// out[n] (+)= the conv of in[n] (plan pl, packed weights) for the samples
/// [n_lo, n_hi), assigned values finished by o's residual and ReLU. Tasks
/// are (block of 16 output channels, range of pixels); every output value
/// is one task's sum over the taps in order, so the
/// split never changes a bit. Inside a parallel region (a thread owning a
/// range of samples) it runs as one task.
template <bool Accumulate>
void run_conv(const Plan& pl, const float* in, int64_t in_stride, const PackedWeights& pw,
              int64_t n_lo, int64_t n_hi, float* out, const ConvOutput& o = {}) {
  const int64_t blocks = pw.blocks, P = pl.P(), K = pl.K, cout = pw.cout;
  int64_t pchunks = 1;
  if (!in_parallel_region() && num_threads() > 1)
    pchunks = std::clamp<int64_t>((2 * num_threads() + blocks - 1) / blocks, 1, (P + 47) / 48);
  const int64_t chunk = ((P + pchunks - 1) / pchunks + 5) / 6 * 6;
  pchunks = (P + chunk - 1) / chunk;
  parallel_for(0, blocks * pchunks, 1, [&](int64_t t0, int64_t t1) {
    float* xpad = pl.in_place ? nullptr : zeroed_scratch(padded_scratch(), pl.padded_floats());
    std::vector<float>& tbuf = tile_scratch();
    if (static_cast<int64_t>(tbuf.size()) < chunk * 16)
      tbuf.resize(static_cast<size_t>(chunk * 16));
    float* T = tbuf.data();
    for (int64_t n = n_lo; n < n_hi; ++n) {
      const float* xp = xpad;
      if (pl.in_place)
        xp = in + n * in_stride;
      else
        pl.fill(in + n * in_stride, xpad);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ob = t / pchunks, pc = t % pchunks;
        const int64_t p_lo = pc * chunk, p_hi = std::min(P, p_lo + chunk);
        const float* w = pw.w.data() + ob * K * 16;
        const float* init = pw.init.data() + ob * 16;
        for (int64_t p = p_lo; p < p_hi; p += 6) {
          int32_t q[6];
          for (int64_t i = 0; i < 6; ++i)  // past the range: repeat the last pixel, dropped
            q[i] = pl.pixq[static_cast<size_t>(std::min(p + i, p_hi - 1))];
          float* Tp = T + (p - p_lo) * 16;
          // The first A pixels on p's row, the rest on the next one.
          const int64_t A = pl.in_place ? 6 : std::min<int64_t>(6, pl.OW - p % pl.OW);
          TileFn fn = p + 6 <= p_hi && 6 - A <= pl.OW ? rows_kernel(pl.s, A) : nullptr;
          if (fn)
            fn(xp, q[0], q[A % 6], pl.koff.data(), K, w, init, Tp);
          else
            tile6x16(xp, q, pl.koff.data(), K, w, init, Tp);
        }
        const int64_t at = (n * cout + ob * 16) * P + p_lo;
        untranspose<Accumulate>(T, p_hi - p_lo, std::min<int64_t>(16, cout - ob * 16), out + at, P,
                                o, o.residual ? o.residual + at : nullptr);
      }
    }
  });
}

/// acc (a 6 x 16 block in accm: taps x output channels) += sum over the
/// pixels of one sample of x_t[q(p)] * dT[p, 0:16], with x_t = xp + off6[t]
/// the input under six taps and dT the sample's output gradient transposed
/// to [P, ld] (ld >= 16, channels contiguous).
void dw6x16(const float* dT, int64_t ld, const float* xp, const int32_t* off6, const Plan& pl,
            float* accm) {
  __m256 c[6][2];
  for (int t = 0; t < 6; ++t)
    for (int v = 0; v < 2; ++v) c[t][v] = _mm256_loadu_ps(accm + (t * 2 + v) * 8);
  const float* xs[6];
  for (int t = 0; t < 6; ++t) xs[t] = xp + off6[t];
  // One flat loop over the pixels (q skips the padding columns at each row
  // end): with a nested row loop g++ keeps the accumulators on the stack.
  const int64_t P = pl.OH * pl.OW, OW = pl.OW, skip = pl.Wp - pl.OW;
  int64_t q = 0, col = 0;
  for (int64_t p = 0; p < P; ++p) {
    const float* d = dT + p * ld;
    const __m256 b0 = _mm256_loadu_ps(d), b1 = _mm256_loadu_ps(d + 8);
#pragma GCC unroll 6
    for (int t = 0; t < 6; ++t) {
      const __m256 a = _mm256_broadcast_ss(xs[t] + q);
      c[t][0] = _mm256_fmadd_ps(a, b0, c[t][0]);
      c[t][1] = _mm256_fmadd_ps(a, b1, c[t][1]);
    }
    ++q;
    if (++col == OW) col = 0, q += skip;
  }
  for (int t = 0; t < 6; ++t)
    for (int v = 0; v < 2; ++v) _mm256_storeu_ps(accm + (t * 2 + v) * 8, c[t][v]);
}

#ifdef __AVX512F__
/// dw6x16 for the nine taps of one input channel of a 3x3 kernel at stride 1
/// (accm: a 9 x 16 block, taps (kh, kw) x output channels; xc: the channel's
/// padded plane). With the whole 3x3 window in one block, every input
/// address is one moving pointer plus 0, 1 or 2 rows (two index registers)
/// plus a constant column: per pixel one load of gradient and nine FMAs with
/// an embedded broadcast. dw6x16's six tap pointers do not fit the
/// general registers beside the loop state, so g++ parks them in vector
/// registers and each broadcast costs three instructions. Each sum runs in
/// the same order as dw6x16's (pixel by pixel), so the results are the same.
void dw3x3x16(const float* dT, int64_t ld, const float* xc, const Plan& pl, float* accm) {
  __m512 c[9];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) c[t] = _mm512_loadu_ps(accm + 16 * t);
  const int64_t r1 = pl.Wp, r2 = 2 * pl.Wp, OW = pl.OW;
  const float* xq = xc;  // the window's top-left corner for the current pixel
  const float* d = dT;
  for (int64_t oh = 0; oh < pl.OH; ++oh, xq += pl.Wp - OW)
    for (int64_t ow = 0; ow < OW; ++ow, ++xq, d += ld) {
      const __m512 b = _mm512_loadu_ps(d);
      c[0] = _mm512_fmadd_ps(_mm512_set1_ps(xq[0]), b, c[0]);
      c[1] = _mm512_fmadd_ps(_mm512_set1_ps(xq[1]), b, c[1]);
      c[2] = _mm512_fmadd_ps(_mm512_set1_ps(xq[2]), b, c[2]);
      c[3] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r1]), b, c[3]);
      c[4] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r1 + 1]), b, c[4]);
      c[5] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r1 + 2]), b, c[5]);
      c[6] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r2]), b, c[6]);
      c[7] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r2 + 1]), b, c[7]);
      c[8] = _mm512_fmadd_ps(_mm512_set1_ps(xq[r2 + 2]), b, c[8]);
    }
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) _mm512_storeu_ps(accm + 16 * t, c[t]);
}
#endif

/// dT[p * ld + oc] = dn[oc * P + p] for oc < OC, p < P: a sample's output
/// gradient with channels contiguous (ld >= OC rounded up to 8; lanes past
/// OC get zeros).
void transpose_to_pixels(const float* dn, int64_t OC, int64_t P, int64_t ld, float* dT) {
  for (int64_t oc = 0; oc < OC; oc += 8)
    lanes::planes_to_lanes(dn + oc * P, P, std::min<int64_t>(8, OC - oc), P,
                           [&](int64_t p) { return dT + p * ld + oc; });
}

}  // namespace

bool supports(const ConvGeometry& g) {
  if (g.stride != 1 || g.groups != 1 || g.KH != g.KW || g.KH < 2 || g.padding >= g.KH) return false;
  // Offsets are int32: the padded input (and output gradient) must fit.
  const int64_t planes = std::max(g.C * (g.H + 2 * g.padding + 2) * (g.W + 2 * g.padding + 2),
                                  g.OC * (g.OH + 2 * g.KH) * (g.OW + 2 * g.KW));
  return planes < std::numeric_limits<int32_t>::max() / 2;
}

bool supports_forward(const ConvGeometry& g) {
  if (g.groups != 1 || g.stride < 1 || g.padding >= std::min(g.KH, g.KW)) return false;
  // A 1x1 conv on a small plane wastes much of a 6-pixel tile (2x2: a
  // third): the GEMM path batches samples into one wide product instead.
  if (g.KH == 1 && g.KW == 1 && g.OH * g.OW < 32) return false;
  const int64_t planes = g.C * ((g.H + 2 * g.padding) * (g.W + 2 * g.padding) + 16);
  return planes < std::numeric_limits<int32_t>::max() / 2;
}

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out) {
  const Plan pl(g.C, g.H, g.W, g.KH, g.KW, g.padding, g.stride);
  const int64_t K = pl.K;
  const PackedWeights pw = pack16(
      g.OC, K, [&](int64_t oc, int64_t k) { return w[oc * K + k]; }, o.scale, o.shift);
  run_conv<false>(pl, x, g.C * g.H * g.W, pw, n_lo, n_hi, out, o);
}

void input_grad(const float* d_out, const float* w, const ConvGeometry& g, int64_t n_lo,
                int64_t n_hi, bool fresh, float* dx) {
  // The adjoint of a stride-1 conv: conv(d_out, W flipped and transposed)
  // with padding KH - 1 - pad, whose output is exactly H x W.
  const Plan pl(g.OC, g.OH, g.OW, g.KH, g.KW, g.KH - 1 - g.padding);
  const int64_t KK = g.KH * g.KW;
  // Tap k = (o, kh, kw) of input channel c: W[o, c, KH-1-kh, KW-1-kw].
  const PackedWeights pw = pack16(
      g.C, pl.K,
      [&](int64_t c, int64_t k) {
        const int64_t o = k / KK, t = k % KK;
        return w[(o * g.C + c) * KK + (KK - 1 - t)];
      },
      nullptr, nullptr);
  const int64_t stride = g.OC * g.OH * g.OW;
  if (fresh)
    run_conv<false>(pl, d_out, stride, pw, n_lo, n_hi, dx);
  else
    run_conv<true>(pl, d_out, stride, pw, n_lo, n_hi, dx);
}

void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw) {
  const Plan pl(g.C, g.H, g.W, g.KH, g.KW, g.padding);
  const int64_t OC = g.OC, K = pl.K, P = pl.P();
  const int64_t ld = (OC + 15) / 16 * 16;  // dT row: channels padded to whole blocks
  // Blocks of taps: the nine of one input channel (3x3 with AVX-512) or six.
#ifdef __AVX512F__
  const bool window = g.KH == 3 && g.KW == 3;
#else
  const bool window = false;
#endif
  const int64_t taps = window ? 9 : 6, tile = taps * 16;
  const int64_t oblocks = ld / 16, kblocks = (K + taps - 1) / taps;
  parallel_for(0, kblocks, 1, [&](int64_t b0, int64_t b1) {
    float* xp = zeroed_scratch(padded_scratch(), pl.padded_floats());
    // The sample's d_out as [P, ld]; channels past OC stay zero.
    float* dT = zeroed_scratch(transposed_scratch(), P * ld);
    // accm[((kb - b0) * oblocks + ob) * tile]: a taps x 16 block (taps x channels).
    float* accm = zeroed_scratch(accumulator_scratch(), (b1 - b0) * oblocks * tile);
    for (int64_t n = n_lo; n < n_hi; ++n) {
      pl.fill(x + n * g.C * g.H * g.W, xp);
      transpose_to_pixels(d_out + n * OC * P, OC, P, ld, dT);
      for (int64_t kb = b0; kb < b1; ++kb) {
        float* acc = accm + (kb - b0) * oblocks * tile;
#ifdef __AVX512F__
        if (window) {
          for (int64_t ob = 0; ob < oblocks; ++ob)
            dw3x3x16(dT + ob * 16, ld, xp + kb * pl.PS, pl, acc + ob * tile);
          continue;
        }
#endif
        int32_t off6[6];
        for (int64_t t = 0; t < 6; ++t)  // taps past K read tap 0; their sums are dropped
          off6[t] = pl.koff[static_cast<size_t>(std::min(kb * 6 + t, K - 1))];
        for (int64_t ob = 0; ob < oblocks; ++ob)
          dw6x16(dT + ob * 16, ld, xp, off6, pl, acc + ob * tile);
      }
    }
    for (int64_t kb = b0; kb < b1; ++kb)
      for (int64_t ob = 0; ob < oblocks; ++ob) {
        const float* blk = accm + ((kb - b0) * oblocks + ob) * tile;
        for (int64_t t = 0; t < taps; ++t)
          for (int64_t j = 0; j < 16; ++j) {
            const int64_t k = kb * taps + t, oc = ob * 16 + j;
            if (k < K && oc < OC) dw[oc * K + k] += blk[t * 16 + j];
          }
      }
  });
}

#else  // no AVX2 + FMA: conv2d keeps to im2col + sgemm

bool supports(const ConvGeometry&) { return false; }
bool supports_forward(const ConvGeometry&) { return false; }
void forward(const float*, const float*, const ConvOutput&, const ConvGeometry&, int64_t, int64_t,
             float*) {}
void input_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, bool, float*) {}
void weight_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, float*) {}

#endif

}  // namespace spruce::ops::direct
