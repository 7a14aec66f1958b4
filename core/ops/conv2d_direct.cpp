// Direct stride-1 conv kernels (see conv2d_direct.h).
//
// Layout. A sample's input is copied into zero-padded planes xp[c] of
// Hp x Wp floats (Hp = H + 2 pad, Wp = W + 2 pad), one every PS floats
// (PS >= Hp Wp + 8, so an 8-float load that starts inside a plane stays
// inside the buffer). Output pixel (oh, ow) has grid position q = oh Wp + ow,
// and its input under tap k = (c, kh, kw) is xp[q + koff[k]] with
// koff[k] = c PS + kh Wp + kw. Every output row is cut into pieces of up to 8
// pixels: a piece is one vector, and its input under a tap one unaligned
// load (lanes past the row's end read padding or the next row; they are
// never stored, and in weight_grad they meet zero gradients).
//
// forward / input_grad: out[oc, piece] = sum_k W[oc, k] xp[piece.q + koff[k]]
// on a 6 x 16 register block (6 output channels, two pieces): per tap, 2
// loads of input, 6 broadcasts of weights packed [oc block][k][6], 12 FMAs.
// input_grad is the same kernel on the zero-padded output gradient with the
// flipped, transposed weight (padding KH - 1 - pad), which is the adjoint of
// a stride-1 conv.
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
// splits the output-channel blocks over the pool instead. Every output value
// and dW element is computed by one task in a fixed order.
#include "core/ops/conv2d_direct.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SPRUCE_DIRECT_CONV 1
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.h"

namespace spruce::ops::direct {

#ifdef SPRUCE_DIRECT_CONV
namespace {

/// Up to 8 consecutive output pixels of one row.
struct Piece {
  int32_t q;  // grid position of the first pixel (padded-plane coordinates)
  int32_t o;  // its offset in the output plane [OH, OW]
  int32_t n;  // pixels, 1..8 (0 marks an empty partner piece)
};

/// A stride-1 conv of a C x H x W input padded by `pad`, kernel KH x KW.
struct Plan {
  int64_t C, H, W, KH, KW, pad;
  int64_t Hp, Wp, PS, OH, OW, K;
  std::vector<int32_t> koff;  // [K], k = (c * KH + kh) * KW + kw
  std::vector<Piece> pieces;  // every output row, cut into pieces of <= 8

  Plan(int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t p)
      : C(c), H(h), W(w), KH(kh), KW(kw), pad(p) {
    Hp = H + 2 * pad, Wp = W + 2 * pad;
    OH = Hp - KH + 1, OW = Wp - KW + 1;
    PS = (Hp * Wp + 8 + 7) / 8 * 8;
    K = C * KH * KW;
    koff.resize(static_cast<size_t>(K));
    for (int64_t ci = 0; ci < C; ++ci)
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j)
          koff[static_cast<size_t>((ci * KH + i) * KW + j)] =
              static_cast<int32_t>(ci * PS + i * Wp + j);
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ow += 8)
        pieces.push_back({static_cast<int32_t>(oh * Wp + ow), static_cast<int32_t>(oh * OW + ow),
                          static_cast<int32_t>(std::min<int64_t>(8, OW - ow))});
  }

  int64_t P() const { return OH * OW; }
  int64_t padded_floats() const { return C * PS; }

  /// Copies one sample [C, H, W] into the interior of the padded planes. The
  /// border is never written, so it stays as zeroed by the caller.
  void fill(const float* x, float* xp) const {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih)
        std::memcpy(xp + c * PS + (ih + pad) * Wp + pad, x + (c * H + ih) * W,
                    static_cast<size_t>(W) * sizeof(float));
  }
};

/// A zeroed buffer of n floats, one per thread, reused from call to call.
float* zeroed_scratch(std::vector<float>& buf, int64_t n) {
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  std::fill(buf.begin(), buf.begin() + n, 0.f);
  return buf.data();
}

std::vector<float>& padded_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

std::vector<float>& transposed_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

std::vector<float>& accumulator_scratch() {
  thread_local std::vector<float> buf;
  return buf;
}

alignas(32) constexpr int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};

/// Lanes [0, n) set.
inline __m256i tail_mask(int32_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
}

/// dst[0, n) (+)= v[0, n).
template <bool Accumulate>
inline void store_piece(float* dst, __m256 v, int32_t n) {
  if (n == 8) {
    if constexpr (Accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(dst));
    _mm256_storeu_ps(dst, v);
  } else if (n > 0) {
    const __m256i m = tail_mask(n);
    if constexpr (Accumulate) v = _mm256_add_ps(v, _mm256_maskload_ps(dst, m));
    _mm256_maskstore_ps(dst, m, v);
  }
}

/// Six output channels (rows[r]: output plane, null past C_out; init[r]:
/// bias or 0) for the pieces a and b.
template <bool Accumulate>
void block6x16(const float* xp, const int32_t* koff, int64_t K, const float* wp, const Piece& a,
               const Piece& b, float* const* rows, const float* init) {
  __m256 c[6][2];
  for (int r = 0; r < 6; ++r) c[r][0] = c[r][1] = _mm256_set1_ps(init[r]);
  const float* pa = xp + a.q;
  const float* pb = xp + b.q;
  for (int64_t k = 0; k < K; ++k) {
    const int32_t off = koff[k];
    const __m256 b0 = _mm256_loadu_ps(pa + off), b1 = _mm256_loadu_ps(pb + off);
    const float* wk = wp + 6 * k;
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      const __m256 av = _mm256_broadcast_ss(wk + r);
      c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
    }
  }
  for (int r = 0; r < 6; ++r) {
    if (!rows[r]) continue;
    store_piece<Accumulate>(rows[r] + a.o, c[r][0], a.n);
    store_piece<Accumulate>(rows[r] + b.o, c[r][1], b.n);
  }
}

/// out[n] (+)= the conv of in[n] (plan pl, weights packed wp [blocks][K][6],
/// cout output channels, optional bias) for the samples [n_lo, n_hi).
template <bool Accumulate>
void run_conv(const Plan& pl, const float* in, int64_t in_stride, const std::vector<float>& wp,
              int64_t cout, const float* bias, int64_t n_lo, int64_t n_hi, float* out) {
  const int64_t blocks = (cout + 5) / 6, P = pl.P(), K = pl.K;
  const auto& pieces = pl.pieces;
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    float* xp = zeroed_scratch(padded_scratch(), pl.padded_floats());
    for (int64_t n = n_lo; n < n_hi; ++n) {
      pl.fill(in + n * in_stride, xp);
      for (int64_t ob = b0; ob < b1; ++ob) {
        float* rows[6];
        float init[6];
        for (int64_t r = 0; r < 6; ++r) {
          const int64_t oc = ob * 6 + r;
          rows[r] = oc < cout ? out + (n * cout + oc) * P : nullptr;
          init[r] = bias && oc < cout ? bias[oc] : 0.f;
        }
        const float* w = wp.data() + ob * K * 6;
        for (size_t i = 0; i < pieces.size(); i += 2) {
          const Piece& a = pieces[i];
          const Piece b = i + 1 < pieces.size() ? pieces[i + 1] : Piece{a.q, a.o, 0};
          block6x16<Accumulate>(xp, pl.koff.data(), K, w, a, b, rows, init);
        }
      }
    }
  });
}

/// Weights as [ceil(cout / 6)][K][6] with w(o, k) the weight of output
/// channel o and tap k (zero past cout).
template <class W>
std::vector<float> pack6(int64_t cout, int64_t K, const W& w) {
  const int64_t blocks = (cout + 5) / 6;
  std::vector<float> wp(static_cast<size_t>(blocks * K * 6), 0.f);
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t k = 0; k < K; ++k) wp[static_cast<size_t>(((o / 6) * K + k) * 6 + o % 6)] = w(o, k);
  return wp;
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

}  // namespace

bool supports(const ConvGeometry& g) {
  if (g.stride != 1 || g.groups != 1 || g.KH != g.KW || g.KH < 2 || g.padding >= g.KH)
    return false;
  // Offsets are int32: the padded input (and output gradient) must fit.
  const int64_t planes = std::max(g.C * (g.H + 2 * g.padding + 2) * (g.W + 2 * g.padding + 2),
                                  g.OC * (g.OH + 2 * g.KH) * (g.OW + 2 * g.KW));
  return planes < std::numeric_limits<int32_t>::max() / 2;
}

void forward(const float* x, const float* w, const float* bias, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out) {
  const Plan pl(g.C, g.H, g.W, g.KH, g.KW, g.padding);
  const int64_t K = pl.K;
  const auto wp = pack6(g.OC, K, [&](int64_t o, int64_t k) { return w[o * K + k]; });
  run_conv<false>(pl, x, g.C * g.H * g.W, wp, g.OC, bias, n_lo, n_hi, out);
}

void input_grad(const float* d_out, const float* w, const ConvGeometry& g, int64_t n_lo,
                int64_t n_hi, bool fresh, float* dx) {
  // The adjoint of a stride-1 conv: conv(d_out, W flipped and transposed)
  // with padding KH - 1 - pad, whose output is exactly H x W.
  const Plan pl(g.OC, g.OH, g.OW, g.KH, g.KW, g.KH - 1 - g.padding);
  const int64_t KK = g.KH * g.KW;
  // Tap k = (o, kh, kw) of input channel c: W[o, c, KH-1-kh, KW-1-kw].
  const auto wp = pack6(g.C, pl.K, [&](int64_t c, int64_t k) {
    const int64_t o = k / KK, t = k % KK;
    return w[(o * g.C + c) * KK + (KK - 1 - t)];
  });
  const int64_t stride = g.OC * g.OH * g.OW;
  if (fresh)
    run_conv<false>(pl, d_out, stride, wp, g.C, nullptr, n_lo, n_hi, dx);
  else
    run_conv<true>(pl, d_out, stride, wp, g.C, nullptr, n_lo, n_hi, dx);
}

void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw) {
  const Plan pl(g.C, g.H, g.W, g.KH, g.KW, g.padding);
  const int64_t OC = g.OC, K = pl.K, P = pl.P();
  const int64_t ld = (OC + 15) / 16 * 16;  // dT row: channels padded to whole blocks
  const int64_t oblocks = ld / 16, kblocks = (K + 5) / 6;
  parallel_for(0, kblocks, 1, [&](int64_t b0, int64_t b1) {
    float* xp = zeroed_scratch(padded_scratch(), pl.padded_floats());
    // The sample's d_out as [P, ld]; channels past OC stay zero.
    float* dT = zeroed_scratch(transposed_scratch(), P * ld);
    // accm[((kb - b0) * oblocks + ob) * 96]: a 6 x 16 block (taps x channels).
    float* accm = zeroed_scratch(accumulator_scratch(), (b1 - b0) * oblocks * 96);
    for (int64_t n = n_lo; n < n_hi; ++n) {
      pl.fill(x + n * g.C * g.H * g.W, xp);
      const float* dn = d_out + n * OC * P;
      for (int64_t p0 = 0; p0 < P; p0 += 64)  // in tiles, so reads and writes both stay in cache
        for (int64_t oc = 0; oc < OC; ++oc)
          for (int64_t p = p0; p < std::min(P, p0 + 64); ++p) dT[p * ld + oc] = dn[oc * P + p];
      for (int64_t kb = b0; kb < b1; ++kb) {
        int32_t off6[6];
        for (int64_t t = 0; t < 6; ++t)  // taps past K read tap 0; their sums are dropped
          off6[t] = pl.koff[static_cast<size_t>(std::min(kb * 6 + t, K - 1))];
        for (int64_t ob = 0; ob < oblocks; ++ob)
          dw6x16(dT + ob * 16, ld, xp, off6, pl, accm + ((kb - b0) * oblocks + ob) * 96);
      }
    }
    for (int64_t kb = b0; kb < b1; ++kb)
      for (int64_t ob = 0; ob < oblocks; ++ob) {
        const float* blk = accm + ((kb - b0) * oblocks + ob) * 96;
        for (int64_t t = 0; t < 6; ++t)
          for (int64_t j = 0; j < 16; ++j) {
            const int64_t k = kb * 6 + t, oc = ob * 16 + j;
            if (k < K && oc < OC) dw[oc * K + k] += blk[t * 16 + j];
          }
      }
  });
}

// ---------------------------------------------------------------------------
// Depthwise convs on tiles of 8 interleaved channels
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

namespace {

struct DwPlan {
  int64_t N, C, H, W, OH, OW, KH, KW, KK, s, pad, Hp, Wp;
  int64_t groups;  // ceil(C / 8)
  int64_t B;       // samples per block
  std::vector<int32_t> toff;  // [KK] tap offset in a padded tile, in floats

  explicit DwPlan(const ConvGeometry& g)
      : N(g.N), C(g.C), H(g.H), W(g.W), OH(g.OH), OW(g.OW), KH(g.KH), KW(g.KW),
        KK(g.KH * g.KW), s(g.stride), pad(g.padding) {
    Hp = H + 2 * pad, Wp = W + 2 * pad;
    groups = (C + 7) / 8;
    B = std::max<int64_t>(1, (N + 7) / 8);
    toff.resize(static_cast<size_t>(KK));
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw) toff[kh * KW + kw] = static_cast<int32_t>((kh * Wp + kw) * 8);
  }
  int64_t blocks() const { return (N + B - 1) / B; }
};

/// Transposes 8 vectors of 8 in place: v[i][j] <- v[j][i].
inline void transpose8(__m256 v[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
  const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  v[0] = _mm256_permute2f128_ps(u0, u4, 0x20), v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  v[2] = _mm256_permute2f128_ps(u2, u6, 0x20), v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  v[4] = _mm256_permute2f128_ps(u0, u4, 0x31), v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  v[6] = _mm256_permute2f128_ps(u2, u6, 0x31), v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/// tile[(r0 + i) * tw + c0 + j][0:8] = planes[ch][i][j] for the `cn` (<= 8)
/// channels of planes [cn, rows, cols] (plane stride rows * cols); lanes
/// past cn get zeros. Tile positions outside are not touched.
void to_tile(const float* planes, int64_t cn, int64_t rows, int64_t cols, int64_t tw, int64_t r0,
             int64_t c0, float* tile) {
  const int64_t plane = rows * cols, c8 = cols / 8 * 8;
  for (int64_t i = 0; i < rows; ++i) {
    float* trow = tile + ((r0 + i) * tw + c0) * 8;
    for (int64_t j = 0; j < c8; j += 8) {
      __m256 v[8];
      for (int64_t ch = 0; ch < 8; ++ch)
        v[ch] = ch < cn ? _mm256_loadu_ps(planes + ch * plane + i * cols + j) : _mm256_setzero_ps();
      transpose8(v);
      for (int64_t k = 0; k < 8; ++k) _mm256_storeu_ps(trow + (j + k) * 8, v[k]);
    }
    for (int64_t j = c8; j < cols; ++j)
      for (int64_t ch = 0; ch < 8; ++ch)
        trow[j * 8 + ch] = ch < cn ? planes[ch * plane + i * cols + j] : 0.f;
  }
}

/// planes[ch][i][j] (+)= tile[(r0 + i) * tw + c0 + j][ch] for ch < cn.
template <bool Accumulate>
void from_tile(const float* tile, int64_t tw, int64_t r0, int64_t c0, int64_t cn, int64_t rows,
               int64_t cols, float* planes) {
  const int64_t plane = rows * cols, c8 = cols / 8 * 8;
  for (int64_t i = 0; i < rows; ++i) {
    const float* trow = tile + ((r0 + i) * tw + c0) * 8;
    for (int64_t j = 0; j < c8; j += 8) {
      __m256 v[8];
      for (int64_t k = 0; k < 8; ++k) v[k] = _mm256_loadu_ps(trow + (j + k) * 8);
      transpose8(v);
      for (int64_t ch = 0; ch < cn; ++ch) {
        float* d = planes + ch * plane + i * cols + j;
        if constexpr (Accumulate) v[ch] = _mm256_add_ps(v[ch], _mm256_loadu_ps(d));
        _mm256_storeu_ps(d, v[ch]);
      }
    }
    for (int64_t j = c8; j < cols; ++j)
      for (int64_t ch = 0; ch < cn; ++ch) {
        float& d = planes[ch * plane + i * cols + j];
        if constexpr (Accumulate) d += trow[j * 8 + ch];
        else d = trow[j * 8 + ch];
      }
  }
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
    case 4: return dw_kernels<4>();
    case 9: return dw_kernels<9>();
    case 16: return dw_kernels<16>();
    case 25: return dw_kernels<25>();
    default: return dw_kernels<kMaxTaps>();  // never: supports_depthwise checks
  }
}

/// Weights of channels [c0, c0 + 8) per tap as lanes (zero past C); flipped
/// (tap t -> KK - 1 - t) for the gather form of d_input.
void tap_vectors(const float* w, const DwPlan& d, int64_t c0, bool flipped, __m256* wv) {
  for (int64_t t = 0; t < d.KK; ++t) {
    alignas(32) float lanes[8];
    for (int64_t j = 0; j < 8; ++j)
      lanes[j] = c0 + j < d.C ? w[(c0 + j) * d.KK + (flipped ? d.KK - 1 - t : t)] : 0.f;
    wv[t] = _mm256_load_ps(lanes);
  }
}

std::vector<float>& dw_scratch(int i) {
  thread_local std::vector<float> bufs[4];
  return bufs[i];
}

}  // namespace

bool supports_depthwise(const ConvGeometry& g) {
  const int64_t taps = g.KH * g.KW;
  return g.groups == g.C && g.OC == g.C && g.C > 1 && g.padding < g.KH && g.padding < g.KW &&
         (taps == 4 || taps == 9 || taps == 16 || taps == 25) && g.KH == g.KW;
}

void depthwise_forward(const float* x, const float* w, const float* bias, const ConvGeometry& g,
                       float* out) {
  const DwPlan d(g);
  const DwKernels k = kernels_for(d.KK);
  const int64_t HW = d.H * d.W, P = d.OH * d.OW;
  const int64_t tasks = d.blocks() * d.groups;
  parallel_for(0, tasks, std::max<int64_t>(1, 16384 / (d.B * 8 * (HW + P))), [&](int64_t lo, int64_t hi) {
    float* xi = zeroed_scratch(dw_scratch(0), d.Hp * d.Wp * 8);
    float* oi = zeroed_scratch(dw_scratch(1), P * 8);
    __m256 wv[kMaxTaps];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t gr = task % d.groups, n0 = task / d.groups * d.B;
      const int64_t c0 = gr * 8, cn = std::min<int64_t>(8, d.C - c0);
      tap_vectors(w, d, c0, false, wv);
      alignas(32) float b[8] = {};
      for (int64_t j = 0; j < cn; ++j) b[j] = bias ? bias[c0 + j] : 0.f;
      const __m256 init = _mm256_load_ps(b);
      for (int64_t n = n0; n < std::min(d.N, n0 + d.B); ++n) {
        to_tile(x + (n * d.C + c0) * HW, cn, d.H, d.W, d.Wp, d.pad, d.pad, xi);
        k.conv(xi, d.Wp, d.s, d.OH, d.OW, d.toff.data(), wv, init, oi);
        from_tile<false>(oi, d.OW, 0, 0, cn, d.OH, d.OW, out + (n * d.C + c0) * P);
      }
    }
  });
}

void depthwise_backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g,
                        float* dx, bool dx_fresh, float* dw) {
  const DwPlan d(g);
  const DwKernels k = kernels_for(d.KK);
  const int64_t HW = d.H * d.W, P = d.OH * d.OW, NB = d.blocks();
  // d_input, stride 1: the forward kernel on d_out zero-padded by KH-1-pad.
  const int64_t gp = d.KH - 1 - d.pad;
  const int64_t gHp = d.OH + 2 * gp, gWp = d.OW + 2 * gp;
  std::vector<int32_t> gtoff(static_cast<size_t>(d.KK));
  for (int64_t kh = 0; kh < d.KH; ++kh)
    for (int64_t kw = 0; kw < d.KW; ++kw) gtoff[kh * d.KW + kw] = static_cast<int32_t>((kh * gWp + kw) * 8);
  std::vector<float> partial(dw ? static_cast<size_t>(NB * d.groups * d.KK * 8) : 0, 0.f);
  const int64_t tasks = NB * d.groups;
  parallel_for(0, tasks, std::max<int64_t>(1, 8192 / (d.B * 8 * (HW + P))), [&](int64_t lo, int64_t hi) {
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

#else  // no AVX2 + FMA: conv2d keeps to im2col + sgemm and its portable depthwise kernel

bool supports(const ConvGeometry&) { return false; }
bool supports_depthwise(const ConvGeometry&) { return false; }
void depthwise_forward(const float*, const float*, const float*, const ConvGeometry&, float*) {}
void depthwise_backward(const float*, const float*, const float*, const ConvGeometry&, float*, bool,
                        float*) {}
void forward(const float*, const float*, const float*, const ConvGeometry&, int64_t, int64_t,
             float*) {}
void input_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, bool, float*) {}
void weight_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, float*) {}

#endif

}  // namespace spruce::ops::direct
