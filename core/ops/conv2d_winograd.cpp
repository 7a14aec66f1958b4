// Winograd F(4x4, 3x3) forward and weight gradient (see conv2d_winograd.h).
//
// With d a 6x6 input patch, g a 3x3 kernel and the matrices of Lavin and
// Gray (2015) for F(4, 3) (interpolation points 0, +-1, +-2 and infinity),
//   B^T = [4  0 -5  0 1 0;  0 -4 -4  1 1 0;  0  4 -4 -1 1 0;
//          0 -2 -1  2 1 0;  0  2 -1 -2 1 0;  0  4  0 -5 0 1],
//   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
//   A^T = [1 1 1 1 1 0;  0 1 -1 2 -2 0;  0 1 1 4 4 0;  0 1 -1 8 -8 1],
// the 4x4 outputs of the patch are Y = A^T [(G g G^T) .* (B^T d B)] A. Summed
// over input channels, the elementwise product becomes, for each of the 36
// positions xi of the 6x6 transformed patch, a product of matrices:
//   M[xi][t][oc] = sum_c U[xi][c][oc] V[xi][t][c]      (t: a 4x4 output tile)
// One code for both vector widths: Vec is L = 16 float lanes on AVX-512 and
// L = 8 on AVX2, and every buffer holds L channels per pixel vector. Per sample:
//   1. x (NCHW) -> X, zero-padded, L channels per pixel vector (8x8 transposes);
//   2. V = B^T d B for every tile, L channels a vector (each 6-point transform
//      of a column, then of a row, is input_1d);
//   3. the 36 products above, on up to Vec::kTiles tiles x Vec::kOut output
//      vectors in registers (per input channel kOut weight loads and, per
//      tile, a broadcast and kOut FMAs);
//   4. Y = A^T M A + shift, L output channels a vector, into the block's
//      output rows as [pixel][L] (contiguous as in an NCHW plane), which go
//      back to NCHW through one lanes::untranspose per channel block (with
//      the residual and ReLU of a fused conv).
// Layouts (floats): X [CB][Hx][Wx][L], V [36][CB][TB][L], M [36][OB][TB][L],
// U [36][OB][C][L], with CB = C / L, OB = OC / L, and V and M for a block of
// TB tiles (whole tile rows, about 16 tiles; on 7x7 and 8x8 planes the
// tiles of 4 samples), their 36 positions padded apart (Plan::VX, MX).
// Planes whose sides are not
// multiples of 4 are padded with zeros to whole tiles (14x14: 16x16).
// Every output element is summed in the same order whatever the width, so
// the two builds agree up to the rounding of their FMAs (both fuse).
//
// One file over ~500 lines on purpose: the forward, the basic-block pair and
// the weight gradient share the Plan, the layouts and the 1-D transforms,
// kept in one translation unit so that they inline into every tile loop.
#include "conv2d_winograd.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include "../parallel.h"
#include "channel_sums.h"
#include "conv2d_lanes.h"
#include "scratch.h"

namespace spruce::ops::winograd {

#if defined(SPRUCE_DIRECT_CONV)
namespace {

// One vector of L float lanes, and the register block of the products:
// kOut output vectors x kTiles tiles of accumulators (AVX-512's 32 registers
// hold 1 x 8; AVX2's 16 hold 2 x 6, two weight loads per six broadcasts).
#if defined(__AVX512F__)
struct Vec {
  using T = __m512;
  static constexpr int L = 16, kOut = 1, kTiles = 8, kGradC = 16, kGradOut = 1;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T div(T a, T b) { return _mm512_div_ps(a, b); }
  static T neg(T a) { return _mm512_xor_ps(a, _mm512_set1_ps(-0.f)); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  // The masked form: _mm512_max_ps's undefined pass-through makes GCC 12
  // warn "may be used uninitialized" where it is inlined. Same instruction.
  static T max(T a, T b) { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
};
#else
struct Vec {
  using T = __m256;
  static constexpr int L = 8, kOut = 2, kTiles = 6, kGradC = 4, kGradOut = 2;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T div(T a, T b) { return _mm256_div_ps(a, b); }
  static T neg(T a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.f)); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
};
#endif
using VT = Vec::T;
constexpr int64_t L = Vec::L;

/// Tile geometry: each tile yields kM x kM outputs from a kA x kA input
/// patch; kXi products per (input, output) channel pair and tile.
constexpr int kM = 4, kA = kM + 2, kXi = kA * kA;

/// c a + b, c a constant.
inline VT axpy(float c, VT a, VT b) { return Vec::fmadd(Vec::set1(c), a, b); }

/// r = B^T d for one column d of a patch (6 values; see the file comment).
inline void input_1d(const VT d[kA], VT r[kA]) {
  const VT t0 = axpy(-4.f, d[2], d[4]), t1 = axpy(-4.f, d[1], d[3]);
  const VT t2 = Vec::sub(d[4], d[2]), t3 = Vec::add(Vec::sub(d[3], d[1]), Vec::sub(d[3], d[1]));
  r[0] = axpy(4.f, d[0], axpy(-5.f, d[2], d[4]));
  r[1] = Vec::add(t0, t1), r[2] = Vec::sub(t0, t1);
  r[3] = Vec::add(t2, t3), r[4] = Vec::sub(t2, t3);
  r[5] = axpy(4.f, d[1], axpy(-5.f, d[3], d[5]));
}

/// y = A^T m for one column m of a transformed product (6 values -> 4).
inline void output_1d(const VT m[kA], VT y[kM]) {
  const VT a = Vec::add(m[1], m[2]), b = Vec::sub(m[1], m[2]);
  const VT c = Vec::add(m[3], m[4]), d = Vec::sub(m[3], m[4]);
  y[0] = Vec::add(Vec::add(m[0], a), c);
  y[1] = axpy(2.f, d, b);
  y[2] = axpy(4.f, c, a);
  y[3] = Vec::add(axpy(8.f, d, b), m[5]);
}

/// e = A D for one column D of an output-gradient tile (4 values -> 6), the
/// adjoint of output_1d.
inline void gradient_1d(const VT d[kM], VT e[kA]) {
  const VT p = Vec::add(d[0], d[2]), q = Vec::add(d[1], d[3]);
  const VT r = axpy(4.f, d[2], d[0]), s = axpy(8.f, d[3], Vec::add(d[1], d[1]));
  e[0] = d[0];
  e[1] = Vec::add(p, q), e[2] = Vec::sub(p, q);
  e[3] = Vec::add(r, s), e[4] = Vec::sub(r, s);
  e[5] = d[3];
}

/// n floats rounded up to an odd number of 64-byte lines. The kXi values of
/// one tile lie this far apart in V, M and Z; with a power of two (2 KiB at
/// 14x14) a tile's 36 stores all fell into two of L1's sets (12 ways each)
/// and missed: the transforms of that plane ran at half speed.
constexpr int64_t odd_lines(int64_t n) { return (((n + 15) / 16) | 1) * 16; }

struct Plan {
  int64_t C, H, W, OC, CB, OB, TH, TW, Hx, Wx;
  int64_t RB, TB;           // tile rows per block, tiles per block: V and M hold one block
  int64_t VX, MX;           // floats between positions xi in V, in M and Z (odd_lines)
  std::vector<int32_t> at;  // [H * W]: pixel l's vector in a padded buffer, in floats
  explicit Plan(const ConvGeometry& g)
      : C(g.C), H(g.H), W(g.W), OC(g.OC), CB(g.C / L), OB(g.OC / L) {
    TH = (H + kM - 1) / kM, TW = (W + kM - 1) / kM;
    // One row / column of padding before, the rest after: the last tile's
    // patch ends at kM T + 1.
    Hx = kM * TH + 2, Wx = kM * TW + 2;
    RB = std::clamp<int64_t>(16 / TW, 1, TH), TB = RB * TW;
    strides();
    at.resize(static_cast<size_t>(H * W));
    for (int64_t l = 0; l < H * W; ++l)
      at[static_cast<size_t>(l)] = static_cast<int32_t>(((1 + l / W) * Wx + 1 + l % W) * L);
  }

  /// Blocks of several samples' tiles where a whole plane is one block of
  /// few tiles (7x7 and 8x8: 4 tiles, 4 samples), in sample order: sample
  /// k's tiles are the block's tiles k TH TW to (k + 1) TH TW - 1. With one
  /// sample a block, each product call would load and store its
  /// accumulators for a handful of tiles. Other planes keep blocks of RB
  /// tile rows of one sample.
  void group_samples() {
    if (RB != TH || TH * TW > 8) return;
    TB = 16 / (TH * TW) * TH * TW;
    strides();
  }

  /// Samples a block holds (group_samples).
  int64_t block_samples() const { return TB / (RB * TW); }

 private:
  void strides() { VX = odd_lines(CB * TB * L), MX = odd_lines(OB * TB * L); }
};

/// U[xi][ob][c][L] = (G g G^T)[xi] of w[oc, c] times scale[oc] (null: 1);
/// U holds kXi OC C floats. The L output channels of a block run in the
/// lanes of a vector: U's rows are stored whole, and G's divisions (true
/// divisions: 1/6 has no exact float) run L at a time. As scalars they were
/// ~2 % of an AVX2 training step.
void transform_weights(const float* w, const float* scale, const Plan& pl, float* U) {
  // G's rows applied to three vectors.
  auto g6 = [](VT a, VT b, VT c, VT r[kA]) {
    const VT four = Vec::set1(4), six = Vec::set1(6), twelve = Vec::set1(12),
             twenty_four = Vec::set1(24);
    r[0] = Vec::div(a, four);
    r[1] = Vec::div(Vec::neg(Vec::add(Vec::add(a, b), c)), six);
    r[2] = Vec::div(Vec::neg(Vec::add(Vec::sub(a, b), c)), six);
    const VT a24 = Vec::div(a, twenty_four), b12 = Vec::div(b, twelve), c6 = Vec::div(c, six);
    r[3] = Vec::add(Vec::add(a24, b12), c6);
    r[4] = Vec::add(Vec::sub(a24, b12), c6);
    r[5] = c;
  };
  const int64_t C = pl.C;
  parallel_for(0, pl.OB * C, 16, [&](int64_t lo, int64_t hi) {
    thread_local Scratch scratch;
    for (int64_t t0 = lo; t0 < hi;) {  // the (block, channel) pairs of one block at a time
      const int64_t ob = t0 / C, c0 = t0 % C, c1 = std::min(C, c0 + hi - t0);
      // taps[(c - c0) 9 + k][lane] = w[ob L + lane, c, k]: the block's filters transposed
      float* taps = scratch.get((c1 - c0) * 9 * L);
      lanes::planes_to_lanes<L / 8>(w + (ob * L * C + c0) * 9, C * 9, L, (c1 - c0) * 9,
                                    [&](int64_t l) { return taps + l * L; });
      const VT a = scale ? Vec::load(scale + ob * L) : Vec::set1(1.f);
      for (int64_t c = c0; c < c1; ++c) {
        const float* k = taps + (c - c0) * 9 * L;
        VT gk[kA][3];  // G g, a column at a time
        for (int j = 0; j < 3; ++j) {
          VT col[kA];
          g6(Vec::load(k + j * L), Vec::load(k + (3 + j) * L), Vec::load(k + (6 + j) * L), col);
          for (int i = 0; i < kA; ++i) gk[i][j] = col[i];
        }
        for (int i = 0; i < kA; ++i) {  // (G g) G^T
          VT u[kA];
          g6(gk[i][0], gk[i][1], gk[i][2], u);
          for (int j = 0; j < kA; ++j)
            Vec::store(U + (((i * kA + j) * pl.OB + ob) * C + c) * L, Vec::mul(u[j], a));
        }
      }
      t0 += c1 - c0;
    }
  });
}

/// X[cb][1 + r][1 + col][0:L] = x[L cb + 0:L][r][col] for the channel
/// blocks cb < blocks of one sample's H x W planes: into the interior of the
/// padded pixel-vector buffer (the border stays zero).
void fill(const float* x, int64_t blocks, const Plan& pl, float* X) {
  const int64_t plane = pl.H * pl.W;
  for (int64_t cb = 0; cb < blocks; ++cb) {
    float* dst = X + cb * pl.Hx * pl.Wx * L;
    lanes::planes_to_lanes<L / 8>(x + cb * L * plane, plane, L, plane,
                                  [&](int64_t l) { return dst + pl.at[static_cast<size_t>(l)]; });
  }
}

/// V[xi][cb][t] = (B^T d B)[xi] for the tiles t of the tile rows [ty0,
/// ty1) (t counted from the block's first tile) and every channel block cb.
void transform_input(const float* X, const Plan& pl, int64_t ty0, int64_t ty1, float* V) {
  const int64_t xi_stride = pl.VX;
  for (int64_t cb = 0; cb < pl.CB; ++cb)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        const float* d = X + ((cb * pl.Hx + kM * ty) * pl.Wx + kM * tx) * L;
        VT a[kA][kA];  // B^T d, a column at a time
#pragma GCC unroll 6
        for (int j = 0; j < kA; ++j) {
          VT col[kA], r[kA];
          for (int k = 0; k < kA; ++k) col[k] = Vec::load(d + (k * pl.Wx + j) * L);
          input_1d(col, r);
          for (int i = 0; i < kA; ++i) a[i][j] = r[i];
        }
        float* v = V + (cb * pl.TB + (ty - ty0) * pl.TW + tx) * L;
#pragma GCC unroll 6
        for (int i = 0; i < kA; ++i) {  // (B^T d) B
          VT r[kA];
          input_1d(a[i], r);
          for (int j = 0; j < kA; ++j) Vec::store(v + (i * kA + j) * xi_stride, r[j]);
        }
      }
}

/// m[o][i][0:L] = sum_c u[o][c][0:L] v[cb(c)][i][c % L] for kOut output
/// vectors o (u: u_stride floats apart, m: m_stride) and NT tiles i: v
/// points at the first tile of channel block 0, blocks cb_stride apart.
template <int NT>
void multiply_tiles(const float* v, int64_t cb_stride, int64_t CB, const float* u, int64_t u_stride,
                    float* m, int64_t m_stride) {
  constexpr int NO = Vec::kOut;
  VT acc[NO][NT];
#pragma GCC unroll 8
  for (int i = 0; i < NT; ++i)
    for (int o = 0; o < NO; ++o) acc[o][i] = Vec::zero();
  for (int64_t cb = 0; cb < CB; ++cb, v += cb_stride, u += L * L) {
#pragma GCC unroll 16
    for (int cc = 0; cc < L; ++cc) {
      VT w[NO];
      for (int o = 0; o < NO; ++o) w[o] = Vec::load(u + o * u_stride + cc * L);
#pragma GCC unroll 8
      for (int i = 0; i < NT; ++i) {
        const VT b = Vec::set1(v[i * L + cc]);
        for (int o = 0; o < NO; ++o) acc[o][i] = Vec::fmadd(b, w[o], acc[o][i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NT; ++i)
    for (int o = 0; o < NO; ++o) Vec::store(m + o * m_stride + i * L, acc[o][i]);
}

using MultiplyFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t);
template <int... NT>
constexpr std::array<MultiplyFn, sizeof...(NT)> multiply_table(std::integer_sequence<int, NT...>) {
  return {multiply_tiles<NT + 1>...};
}
/// kMultiply[nt - 1] multiplies nt tiles, 1 <= nt <= Vec::kTiles.
constexpr auto kMultiply = multiply_table(std::make_integer_sequence<int, Vec::kTiles>());

/// M = U V for the kXi positions, all output-channel blocks and the nt
/// tiles of a block.
void multiply(const float* U, const float* V, const Plan& pl, int64_t nt_all, float* M) {
  const int64_t cb_stride = pl.TB * L;
  for (int64_t xi = 0; xi < kXi; ++xi)
    for (int64_t ob = 0; ob < pl.OB; ob += Vec::kOut) {  // OB is a multiple of kOut
      const float* u = U + (xi * pl.OB + ob) * pl.C * L;
      float* m = M + xi * pl.MX + ob * pl.TB * L;
      const float* v = V + xi * pl.VX;
      // Chunks of equal size (14 tiles: 5 + 5 + 4, not 6 + 6 + 2): a short
      // chunk would reload every weight for few products.
      const int64_t chunks = (nt_all + Vec::kTiles - 1) / Vec::kTiles;
      for (int64_t k = 0; k < chunks; ++k) {
        const int64_t t = k * nt_all / chunks, nt = (k + 1) * nt_all / chunks - t;
        kMultiply[static_cast<size_t>(nt - 1)](v + t * L, cb_stride, pl.CB, u, pl.C * L, m + t * L,
                                               pl.TB * L);
      }
    }
}

/// y = A^T M A + shift for the tile of M at m (positions xi_stride floats apart).
inline void output_tile(const float* m, int64_t xi_stride, VT shift, VT y[kM][kM]) {
  VT s[kM][kA];  // A^T M, a column at a time
#pragma GCC unroll 6
  for (int j = 0; j < kA; ++j) {
    VT col[kA], r[kM];
    for (int k = 0; k < kA; ++k) col[k] = Vec::load(m + (k * kA + j) * xi_stride);
    output_1d(col, r);
    for (int i = 0; i < kM; ++i) s[i][j] = r[i];
  }
#pragma GCC unroll 4
  for (int i = 0; i < kM; ++i) {  // (A^T M) A + shift
    VT r[kM];
    output_1d(s[i], r);
    for (int j = 0; j < kM; ++j) y[i][j] = Vec::add(r[j], shift);
  }
}

/// s1[l] += sum over the `pixels` vectors of R of (R[p][l] - center[l]), s2[l]
/// += the same squared: one block of a sample's output rows, for the sums a
/// batch norm takes instead of a pass of its own (channel_sums.h). Float
/// lanes over the block (at most a few hundred pixels), then double.
void add_sums(const float* R, int64_t pixels, const float* center, double* s1, double* s2) {
  const VT c = Vec::load(center);
  VT a[4], b[4];  // four chains each: the adds' latency
  for (int k = 0; k < 4; ++k) a[k] = b[k] = Vec::zero();
  int64_t p = 0;
  for (; p + 4 <= pixels; p += 4)
    for (int k = 0; k < 4; ++k) {
      const VT d = Vec::sub(Vec::load(R + (p + k) * L), c);
      a[k] = Vec::add(a[k], d);
      b[k] = Vec::fmadd(d, d, b[k]);
    }
  for (; p < pixels; ++p) {
    const VT d = Vec::sub(Vec::load(R + p * L), c);
    a[0] = Vec::add(a[0], d);
    b[0] = Vec::fmadd(d, d, b[0]);
  }
  alignas(64) float t1[L], t2[L];
  Vec::store(t1, Vec::add(Vec::add(a[0], a[1]), Vec::add(a[2], a[3])));
  Vec::store(t2, Vec::add(Vec::add(b[0], b[1]), Vec::add(b[2], b[3])));
  for (int64_t l = 0; l < L; ++l) s1[l] += t1[l], s2[l] += t2[l];
}

/// Floats of the row buffer R that transform_output needs for plan pl.
int64_t output_rows_size(const Plan& pl) { return kM * pl.RB * pl.W * L; }

/// out[n] = A^T M A + shift for the tile rows [ty0, ty1), finished by o
/// (residual, ReLU), in NCHW: per output-channel block, the block's output
/// rows go into R as [pixel][L] (the tiles' padding past H and W dropped),
/// contiguous as in an NCHW plane, and back through one lanes::untranspose;
/// o.sums, when set, gets the block's sums on the way (add_sums).
/// A call per output row would leave most rows a partial group of 8 pixels
/// for the masked tail (28 = 3 x 8 + 4).
void transform_output(const float* M, const Plan& pl, const ConvOutput& o, int64_t n, int64_t ty0,
                      int64_t ty1, float* R, float* out) {
  const int64_t P = pl.H * pl.W, xi_stride = pl.MX, y0 = kM * ty0;
  const int64_t pixels = (std::min(pl.H, kM * ty1) - y0) * pl.W;
  for (int64_t ob = 0; ob < pl.OB; ++ob) {
    const VT shift = o.shift ? Vec::load(o.shift + ob * L) : Vec::zero();
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      const int64_t rows = std::min<int64_t>(kM, pl.H - kM * ty);
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        VT y[kM][kM];
        output_tile(M + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * L, xi_stride, shift, y);
        const int64_t cols = std::min<int64_t>(kM, pl.W - kM * tx);
        float* r = R + ((kM * ty - y0) * pl.W + kM * tx) * L;
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) Vec::store(r + (i * pl.W + j) * L, y[i][j]);
      }
    }
    if (o.sums) {
      const int64_t c0 = n * pl.OC + ob * L;
      add_sums(R, pixels, o.sums->center.data() + ob * L, o.sums->s1.data() + c0,
               o.sums->s2.data() + c0);
    }
    const int64_t at = (n * pl.OC + ob * L) * P + y0 * pl.W;
    lanes::untranspose<false, L>(R, pixels, L, out + at, P, o,
                                 o.residual ? o.residual + at : nullptr);
  }
}

/// The same outputs (o without a residual) stored as the next conv's input:
/// into the interior of X, a padded pixel-vector buffer laid out as fill()
/// writes it for an H x W plane of OC channels. Outputs of the tiles' padding
/// (past H or W) are dropped, so X's border stays zero.
void transform_output_to_lanes(const float* M, const Plan& pl, const ConvOutput& o, int64_t ty0,
                               int64_t ty1, float* X) {
  const int64_t xi_stride = pl.MX;
  for (int64_t ob = 0; ob < pl.OB; ++ob) {
    const VT shift = o.shift ? Vec::load(o.shift + ob * L) : Vec::zero();
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        VT y[kM][kM];
        output_tile(M + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * L, xi_stride, shift, y);
        const int64_t rows = std::min<int64_t>(kM, pl.H - kM * ty);
        const int64_t cols = std::min<int64_t>(kM, pl.W - kM * tx);
        for (int64_t i = 0; i < rows; ++i) {
          float* x = X + ((ob * pl.Hx + 1 + kM * ty + i) * pl.Wx + 1 + kM * tx) * L;
          for (int64_t j = 0; j < cols; ++j)
            Vec::store(x + j * L, o.relu ? Vec::max(y[i][j], Vec::zero()) : y[i][j]);
        }
      }
  }
}

// Weight gradient. The forward is linear in g, Y = A^T [(G g G^T) .* V] A,
// so its adjoint gives, per tile with output gradient D (kM x kM),
//   dg = G^T [(A D A^T) .* V] G,
// and summed over tiles and samples, for each of the kXi positions xi,
//   S[xi][c][oc] = sum_t V[xi][t][c] Z[xi][t][oc],   Z = A D A^T,
// a product whose long dimension (tiles x samples) is summed over; dW =
// G^T S G once at the end. Layouts: D [OB][Hx][Wx][L] (the output gradient
// as pixel vectors, zero past OH x OW), Z [kXi][OB][TB][L], S [kXi][OB][C][L].

/// Z[xi][ob][t] = (A D A^T)[xi] for the tiles of the tile rows [ty0, ty1).
void transform_gradient(const float* D, const Plan& pl, int64_t ty0, int64_t ty1, float* Z) {
  const int64_t xi_stride = pl.MX;
  for (int64_t ob = 0; ob < pl.OB; ++ob)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        // The tile's outputs (kM ty + k, kM tx + l) sit at D[1 + kM ty + k][1 + kM tx + l].
        const float* d = D + ((ob * pl.Hx + 1 + kM * ty) * pl.Wx + 1 + kM * tx) * L;
        VT e[kA][kM];  // A D, a column at a time
        for (int l = 0; l < kM; ++l) {
          VT col[kM], r[kA];
          for (int k = 0; k < kM; ++k) col[k] = Vec::load(d + (k * pl.Wx + l) * L);
          gradient_1d(col, r);
          for (int i = 0; i < kA; ++i) e[i][l] = r[i];
        }
        float* z = Z + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * L;
        for (int i = 0; i < kA; ++i) {  // (A D) A^T
          VT r[kA];
          gradient_1d(e[i], r);
          for (int j = 0; j < kA; ++j) Vec::store(z + (i * kA + j) * xi_stride, r[j]);
        }
      }
}

/// s[o][cc][0:L] += sum over the nt tiles t of v[t][cc] z[o][t][0:L], for
/// kGradC input channels cc (of one block) and kGradOut output vectors o
/// (z: z_stride floats apart, s: s_stride): per tile kGradOut gradient
/// loads, kGradC broadcasts and their products.
void accumulate_tiles(const float* v, const float* z, int64_t z_stride, int64_t nt, float* s,
                      int64_t s_stride) {
  constexpr int NC = Vec::kGradC, NO = Vec::kGradOut;
  VT acc[NO][NC];
#pragma GCC unroll 16
  for (int cc = 0; cc < NC; ++cc)
    for (int o = 0; o < NO; ++o) acc[o][cc] = Vec::load(s + o * s_stride + cc * L);
  for (int64_t t = 0; t < nt; ++t, v += L, z += L) {
    VT g[NO];
    for (int o = 0; o < NO; ++o) g[o] = Vec::load(z + o * z_stride);
#pragma GCC unroll 16
    for (int cc = 0; cc < NC; ++cc) {
      const VT b = Vec::set1(v[cc]);
      for (int o = 0; o < NO; ++o) acc[o][cc] = Vec::fmadd(b, g[o], acc[o][cc]);
    }
  }
#pragma GCC unroll 16
  for (int cc = 0; cc < NC; ++cc)
    for (int o = 0; o < NO; ++o) Vec::store(s + o * s_stride + cc * L, acc[o][cc]);
}

/// r = G^T m for one column m of S (6 values -> 3), L channel pairs a vector.
inline void weight_1d(const VT m[kA], VT r[3]) {
  const VT a = Vec::add(m[1], m[2]), b = Vec::sub(m[2], m[1]);
  const VT c = Vec::add(m[3], m[4]), d = Vec::sub(m[3], m[4]);
  r[0] = axpy(1.f / 24, c, axpy(-1.f / 6, a, Vec::mul(Vec::set1(0.25f), m[0])));
  r[1] = axpy(1.f / 12, d, Vec::mul(Vec::set1(1.f / 6), b));
  r[2] = axpy(1.f / 6, Vec::sub(c, a), m[5]);
}

/// dw[oc][c] += G^T S[.][c][oc] G (3x3) for every channel pair: the
/// transform on L output channels at once (S holds them in its lanes), then
/// each lane's nine values added to its own kernel.
void add_weight_gradient(const float* S, const Plan& pl, float* dw) {
  const int64_t xi_stride = pl.OB * pl.C * L;
  for (int64_t ob = 0; ob < pl.OB; ++ob)
    for (int64_t c = 0; c < pl.C; ++c) {
      const float* s = S + (ob * pl.C + c) * L;
      VT r[3][kA];  // G^T m, a column at a time
      for (int j = 0; j < kA; ++j) {
        VT col[kA], y[3];
        for (int i = 0; i < kA; ++i) col[i] = Vec::load(s + (i * kA + j) * xi_stride);
        weight_1d(col, y);
        for (int i = 0; i < 3; ++i) r[i][j] = y[i];
      }
      alignas(64) float k[9][L];  // (G^T m) G, kernel position-major
      for (int i = 0; i < 3; ++i) {
        VT y[3];
        weight_1d(r[i], y);
        for (int j = 0; j < 3; ++j) Vec::store(k[i * 3 + j], y[j]);
      }
      for (int64_t lane = 0; lane < L; ++lane) {
        float* d = dw + ((ob * L + lane) * pl.C + c) * 9;
        for (int q = 0; q < 9; ++q) d[q] += k[q][lane];
      }
    }
}

}  // namespace

bool supports(const ConvGeometry& g) {
  // Positions in a padded plane of pixel vectors are int32 (Plan::at).
  const bool small_plane = (g.H + 3) * (g.W + 3) * L < std::numeric_limits<int32_t>::max() / 2;
  return g.KH == 3 && g.KW == 3 && g.stride == 1 && g.padding == 1 && g.groups == 1 &&
         g.C % 16 == 0 && g.OC % 16 == 0 && g.C > 0 && g.OC > 0 && g.N >= 2 && g.H >= 2 &&
         g.W >= 2 && small_plane;
}

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             int64_t n_lo, int64_t n_hi, float* out) {
  Plan pl(g);
  pl.group_samples();
  const int64_t ns = pl.block_samples();
  thread_local std::vector<float> ubuf;  // the calling thread's; the tasks only read it
  float* U = lanes::zeroed_scratch(ubuf, kXi * pl.OC * pl.C);
  transform_weights(w, o.scale, pl, U);
  auto run = [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> xbuf, vbuf, mbuf, rbuf;
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * L);  // border stays zero
    float* V = lanes::zeroed_scratch(vbuf, kXi * pl.VX);
    float* M = lanes::zeroed_scratch(mbuf, kXi * pl.MX);
    float* R = lanes::zeroed_scratch(rbuf, output_rows_size(pl));
    for (int64_t n0 = lo; n0 < hi; n0 += ns) {
      const int64_t n1 = std::min(hi, n0 + ns);
      // Blocks of tile rows (of ns samples): V and M stay in cache.
      for (int64_t ty0 = 0; ty0 < pl.TH; ty0 += pl.RB) {
        const int64_t ty1 = std::min(pl.TH, ty0 + pl.RB), row_tiles = (ty1 - ty0) * pl.TW;
        for (int64_t n = n0; n < n1; ++n) {
          if (ty0 == 0) fill(x + n * pl.C * pl.H * pl.W, pl.CB, pl, X);  // see weight_grad
          transform_input(X, pl, ty0, ty1, V + (n - n0) * row_tiles * L);
        }
        multiply(U, V, pl, (n1 - n0) * row_tiles, M);
        for (int64_t n = n0; n < n1; ++n)
          transform_output(M + (n - n0) * row_tiles * L, pl, o, n, ty0, ty1, R, out);
      }
    }
  };
  if (in_parallel_region())
    run(n_lo, n_hi);
  else
    parallel_for(n_lo, n_hi, 1, run);
}

void forward_pair(const float* x, const float* w1, const ConvOutput& o1, const ConvGeometry& g1,
                  const float* w2, const ConvOutput& o2, const ConvGeometry& g2, float* out) {
  const Plan p1(g1), p2(g2);
  thread_local std::vector<float> ubuf1, ubuf2;  // the calling thread's; the tasks only read them
  float* U1 = lanes::zeroed_scratch(ubuf1, kXi * p1.OC * p1.C);
  float* U2 = lanes::zeroed_scratch(ubuf2, kXi * p2.OC * p2.C);
  transform_weights(w1, o1.scale, p1, U1);
  transform_weights(w2, o2.scale, p2, U2);
  parallel_for(0, g1.N, 1, [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> xbuf, x2buf, vbuf, mbuf, rbuf;
    // Both convs' planes are H x W, so the plans differ only in channels.
    float* X = lanes::zeroed_scratch(xbuf, p1.CB * p1.Hx * p1.Wx * L);
    float* X2 = lanes::zeroed_scratch(x2buf, p2.CB * p2.Hx * p2.Wx * L);  // border stays zero
    float* V = lanes::zeroed_scratch(vbuf, kXi * std::max(p1.VX, p2.VX));
    float* M = lanes::zeroed_scratch(mbuf, kXi * std::max(p1.MX, p2.MX));
    float* R = lanes::zeroed_scratch(rbuf, output_rows_size(p2));
    for (int64_t n = lo; n < hi; ++n) {
      fill(x + n * p1.C * p1.H * p1.W, p1.CB, p1, X);
      for (int64_t ty0 = 0; ty0 < p1.TH; ty0 += p1.RB) {
        const int64_t ty1 = std::min(p1.TH, ty0 + p1.RB);
        transform_input(X, p1, ty0, ty1, V);
        multiply(U1, V, p1, (ty1 - ty0) * p1.TW, M);
        transform_output_to_lanes(M, p1, o1, ty0, ty1, X2);
      }
      for (int64_t ty0 = 0; ty0 < p2.TH; ty0 += p2.RB) {
        const int64_t ty1 = std::min(p2.TH, ty0 + p2.RB);
        transform_input(X2, p2, ty0, ty1, V);
        multiply(U2, V, p2, (ty1 - ty0) * p2.TW, M);
        transform_output(M, p2, o2, n, ty0, ty1, R, out);
      }
    }
  });
}

void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw) {
  Plan pl(g);
  pl.group_samples();  // tiles in sample order: the sums' order stays
  const int64_t ns = pl.block_samples();
  // Tasks own output-channel blocks; each sums its part of S over all the
  // samples in order, so the split over threads never changes a bit.
  constexpr int64_t NO = Vec::kGradOut;  // OB is a multiple
  const int64_t tasks = in_parallel_region() ? 1 : pl.OB / NO;
  thread_local std::vector<float> sbuf;  // the calling thread's; tasks write disjoint blocks
  float* S = lanes::zeroed_scratch(sbuf, kXi * pl.OB * pl.C * L);
  parallel_for(0, tasks, 1, [&](int64_t k0, int64_t k1) {
    const int64_t ob0 = tasks == 1 ? 0 : k0 * NO, ob1 = tasks == 1 ? pl.OB : k1 * NO;
    thread_local std::vector<float> xbuf, dbuf, vbuf, zbuf;
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * L);
    float* D = lanes::zeroed_scratch(dbuf, pl.OB * pl.Hx * pl.Wx * L);
    float* V = lanes::zeroed_scratch(vbuf, kXi * pl.VX);
    float* Z = lanes::zeroed_scratch(zbuf, kXi * pl.MX);
    for (int64_t n0 = n_lo; n0 < n_hi; n0 += ns) {
      const int64_t n1 = std::min(n_hi, n0 + ns);
      for (int64_t ty0 = 0; ty0 < pl.TH; ty0 += pl.RB) {
        const int64_t ty1 = std::min(pl.TH, ty0 + pl.RB), row_tiles = (ty1 - ty0) * pl.TW;
        for (int64_t n = n0; n < n1; ++n) {
          if (ty0 == 0) {  // ns > 1 has one block of rows; ns == 1 keeps X and D for the next
            fill(x + n * pl.C * pl.H * pl.W, pl.CB, pl, X);
            fill(d_out + n * pl.OC * pl.H * pl.W, pl.OB, pl, D);
          }
          const int64_t t0 = (n - n0) * row_tiles;  // the sample's first tile in the block
          transform_input(X, pl, ty0, ty1, V + t0 * L);
          transform_gradient(D, pl, ty0, ty1, Z + t0 * L);
        }
        const int64_t nt = (n1 - n0) * row_tiles;
        for (int64_t xi = 0; xi < kXi; ++xi)
          for (int64_t ob = ob0; ob < ob1; ob += NO)
            for (int64_t c = 0; c < pl.C; c += Vec::kGradC)
              accumulate_tiles(V + xi * pl.VX + (c / L) * pl.TB * L + c % L,
                               Z + xi * pl.MX + ob * pl.TB * L, pl.TB * L, nt,
                               S + ((xi * pl.OB + ob) * pl.C + c) * L, pl.C * L);
      }
    }
  });
  add_weight_gradient(S, pl, dw);
}

#else  // without AVX2 + FMA the other kernels handle these convs

bool supports(const ConvGeometry&) { return false; }

void forward(const float*, const float*, const ConvOutput&, const ConvGeometry&, int64_t, int64_t,
             float*) {}

void weight_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, float*) {}

void forward_pair(const float*, const float*, const ConvOutput&, const ConvGeometry&, const float*,
                  const ConvOutput&, const ConvGeometry&, float*) {}

#endif

}  // namespace spruce::ops::winograd
