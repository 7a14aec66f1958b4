// Winograd F(2x2, 3x3) forward and weight gradient (see conv2d_winograd.h).
//
// With d a 4x4 input patch, g a 3x3 kernel and the matrices of Lavin and
// Gray (2015),
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1],
// the 2x2 outputs of the patch are Y = A^T [(G g G^T) .* (B^T d B)] A. Summed
// over input channels, the elementwise product becomes, for each of the 16
// positions xi of the 4x4 transformed patch, a product of matrices:
//   M[xi][t][oc] = sum_c U[xi][c][oc] V[xi][t][c]      (t: a 2x2 output tile)
// One code for both vector widths: Vec is L = 16 float lanes on AVX-512 and
// L = 8 on AVX2, and every buffer holds L channels per pixel vector. Per sample:
//   1. x (NCHW) -> X, zero-padded, L channels per pixel vector (8x8 transposes);
//   2. V = B^T d B for every tile, L channels a vector;
//   3. the 16 products above, on up to Vec::kTiles tiles x Vec::kOut output
//      vectors in registers (per input channel kOut weight loads and, per
//      tile, a broadcast and kOut FMAs);
//   4. Y = A^T M A + shift, L output channels a vector, into two output rows
//      of [pixel][L], which go back to NCHW through lanes::untranspose (with
//      the residual and ReLU of a fused conv).
// Layouts (floats): X [CB][Hx][Wx][L], V [16][CB][TB][L], M [16][OB][TB][L],
// U [16][OB][C][L], with CB = C / L, OB = OC / L, and V and M for a block of
// TB tiles (whole tile rows, about 16 tiles: V and M stay in the L1 cache).
// Every output element is summed in the same order whatever the width, so
// the two builds agree up to the rounding of their FMAs (both fuse).
#include "conv2d_winograd.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include "../parallel.h"
#include "conv2d_lanes.h"

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
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
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
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
};
#endif
using VT = Vec::T;
constexpr int64_t L = Vec::L;

struct Plan {
  int64_t C, H, W, OC, CB, OB, TH, TW, Hx, Wx;
  int64_t RB, TB;           // tile rows per block, tiles per block: V and M hold one block
  std::vector<int32_t> at;  // [H * W]: pixel l's vector in a padded buffer, in floats
  explicit Plan(const ConvGeometry& g)
      : C(g.C), H(g.H), W(g.W), OC(g.OC), CB(g.C / L), OB(g.OC / L) {
    TH = (H + 1) / 2, TW = (W + 1) / 2;
    Hx = 2 * TH + 2, Wx = 2 * TW + 2;  // one row / column of padding before, the rest after
    RB = std::clamp<int64_t>(16 / TW, 1, TH), TB = RB * TW;
    at.resize(static_cast<size_t>(H * W));
    for (int64_t l = 0; l < H * W; ++l)
      at[static_cast<size_t>(l)] = static_cast<int32_t>(((1 + l / W) * Wx + 1 + l % W) * L);
  }
};

/// U[xi][ob][c][L] = (G g G^T)[xi] of w[oc, c] times scale[oc] (null: 1);
/// U holds 16 OC C floats.
void transform_weights(const float* w, const float* scale, const Plan& pl, float* U) {
  for (int64_t oc = 0; oc < pl.OC; ++oc)
    for (int64_t c = 0; c < pl.C; ++c) {
      const float* k = w + (oc * pl.C + c) * 9;
      const float a = scale ? scale[oc] : 1.f;
      float gk[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        gk[0][j] = k[j];
        gk[1][j] = 0.5f * (k[j] + k[3 + j] + k[6 + j]);
        gk[2][j] = 0.5f * (k[j] - k[3 + j] + k[6 + j]);
        gk[3][j] = k[6 + j];
      }
      for (int i = 0; i < 4; ++i) {
        const float u[4] = {gk[i][0], 0.5f * (gk[i][0] + gk[i][1] + gk[i][2]),
                            0.5f * (gk[i][0] - gk[i][1] + gk[i][2]), gk[i][2]};
        for (int j = 0; j < 4; ++j)
          U[(((i * 4 + j) * pl.OB + oc / L) * pl.C + c) * L + oc % L] = u[j] * a;
      }
    }
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
  const int64_t xi_stride = pl.CB * pl.TB * L;
  for (int64_t cb = 0; cb < pl.CB; ++cb)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        const float* d = X + ((cb * pl.Hx + 2 * ty) * pl.Wx + 2 * tx) * L;
        VT a[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
          const VT d0 = Vec::load(d + j * L), d1 = Vec::load(d + (pl.Wx + j) * L);
          const VT d2 = Vec::load(d + (2 * pl.Wx + j) * L);
          const VT d3 = Vec::load(d + (3 * pl.Wx + j) * L);
          a[0][j] = Vec::sub(d0, d2), a[1][j] = Vec::add(d1, d2);
          a[2][j] = Vec::sub(d2, d1), a[3][j] = Vec::sub(d1, d3);
        }
        float* v = V + (cb * pl.TB + (ty - ty0) * pl.TW + tx) * L;
        for (int i = 0; i < 4; ++i) {  // (B^T d) B
          Vec::store(v + (i * 4 + 0) * xi_stride, Vec::sub(a[i][0], a[i][2]));
          Vec::store(v + (i * 4 + 1) * xi_stride, Vec::add(a[i][1], a[i][2]));
          Vec::store(v + (i * 4 + 2) * xi_stride, Vec::sub(a[i][2], a[i][1]));
          Vec::store(v + (i * 4 + 3) * xi_stride, Vec::sub(a[i][1], a[i][3]));
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

/// M = U V for the 16 positions, all output-channel blocks and the nt
/// tiles of a block.
void multiply(const float* U, const float* V, const Plan& pl, int64_t nt_all, float* M) {
  const int64_t cb_stride = pl.TB * L;
  for (int64_t xi = 0; xi < 16; ++xi)
    for (int64_t ob = 0; ob < pl.OB; ob += Vec::kOut) {  // OB is a multiple of kOut
      const float* u = U + (xi * pl.OB + ob) * pl.C * L;
      float* m = M + (xi * pl.OB + ob) * pl.TB * L;
      const float* v = V + xi * pl.CB * pl.TB * L;
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

/// out[n] = A^T M A + shift for the tile rows [ty0, ty1), finished by o
/// (residual, ReLU), in NCHW: one tile row at a time through two
/// [pixel][L] rows R.
void transform_output(const float* M, const Plan& pl, const ConvOutput& o, int64_t n, int64_t ty0,
                      int64_t ty1, float* R, float* out) {
  const int64_t P = pl.H * pl.W, xi_stride = pl.OB * pl.TB * L, rw = 2 * pl.TW * L;
  for (int64_t ob = 0; ob < pl.OB; ++ob) {
    const VT shift = o.shift ? Vec::load(o.shift + ob * L) : Vec::zero();
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        const float* m = M + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * L;
        VT s[2][4];  // A^T M
        for (int j = 0; j < 4; ++j) {
          const VT m0 = Vec::load(m + j * xi_stride);
          const VT m1 = Vec::load(m + (4 + j) * xi_stride);
          const VT m2 = Vec::load(m + (8 + j) * xi_stride);
          const VT m3 = Vec::load(m + (12 + j) * xi_stride);
          s[0][j] = Vec::add(Vec::add(m0, m1), m2);
          s[1][j] = Vec::sub(Vec::sub(m1, m2), m3);
        }
        for (int i = 0; i < 2; ++i) {  // (A^T M) A + shift
          float* r = R + i * rw + 2 * tx * L;
          const VT y0 = Vec::add(Vec::add(s[i][0], s[i][1]), s[i][2]);
          const VT y1 = Vec::sub(Vec::sub(s[i][1], s[i][2]), s[i][3]);
          Vec::store(r, Vec::add(y0, shift));
          Vec::store(r + L, Vec::add(y1, shift));
        }
      }
      for (int64_t i = 0; i < 2 && 2 * ty + i < pl.H; ++i) {
        const int64_t at = (n * pl.OC + ob * L) * P + (2 * ty + i) * pl.W;
        lanes::untranspose<false, L>(R + i * rw, pl.W, L, out + at, P, o,
                                     o.residual ? o.residual + at : nullptr);
      }
    }
  }
}

// Weight gradient. The forward is linear in g, Y = A^T [(G g G^T) .* V] A,
// so its adjoint gives, per tile with output gradient D (2x2),
//   dg = G^T [(A D A^T) .* V] G,
// and summed over tiles and samples, for each of the 16 positions xi,
//   S[xi][c][oc] = sum_t V[xi][t][c] Z[xi][t][oc],   Z = A D A^T,
// a product whose long dimension (tiles x samples) is summed over; dW =
// G^T S G once at the end. Layouts: D [OB][Hx][Wx][L] (the output gradient
// as pixel vectors, zero past OH x OW), Z [16][OB][TB][L], S [16][OB][C][L].

/// Z[xi][ob][t] = (A D A^T)[xi] for the tiles of the tile rows [ty0, ty1).
void transform_gradient(const float* D, const Plan& pl, int64_t ty0, int64_t ty1, float* Z) {
  const int64_t xi_stride = pl.OB * pl.TB * L;
  for (int64_t ob = 0; ob < pl.OB; ++ob)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        // The tile's outputs (2 ty + k, 2 tx + l) sit at D[1 + 2 ty + k][1 + 2 tx + l].
        const float* d = D + ((ob * pl.Hx + 1 + 2 * ty) * pl.Wx + 1 + 2 * tx) * L;
        const VT d00 = Vec::load(d), d01 = Vec::load(d + L);
        const VT d10 = Vec::load(d + pl.Wx * L), d11 = Vec::load(d + (pl.Wx + 1) * L);
        // A D: rows D0, D0 + D1, D0 - D1, -D1 (two columns each)
        const VT e[4][2] = {{d00, d01},
                            {Vec::add(d00, d10), Vec::add(d01, d11)},
                            {Vec::sub(d00, d10), Vec::sub(d01, d11)},
                            {Vec::sub(Vec::zero(), d10), Vec::sub(Vec::zero(), d11)}};
        float* z = Z + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * L;
        for (int i = 0; i < 4; ++i) {  // (A D) A^T: columns e0, e0 + e1, e0 - e1, -e1
          Vec::store(z + (i * 4 + 0) * xi_stride, e[i][0]);
          Vec::store(z + (i * 4 + 1) * xi_stride, Vec::add(e[i][0], e[i][1]));
          Vec::store(z + (i * 4 + 2) * xi_stride, Vec::sub(e[i][0], e[i][1]));
          Vec::store(z + (i * 4 + 3) * xi_stride, Vec::sub(Vec::zero(), e[i][1]));
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

/// dw[oc][c] += G^T S[.][c][oc] G (3x3) for every channel pair.
void add_weight_gradient(const float* S, const Plan& pl, float* dw) {
  for (int64_t oc = 0; oc < pl.OC; ++oc)
    for (int64_t c = 0; c < pl.C; ++c) {
      float m[4][4];
      for (int xi = 0; xi < 16; ++xi)
        m[xi / 4][xi % 4] = S[((xi * pl.OB + oc / L) * pl.C + c) * L + oc % L];
      float r[3][4];  // G^T m: rows m0 + (m1 + m2) / 2, (m1 - m2) / 2, (m1 + m2) / 2 + m3
      for (int j = 0; j < 4; ++j) {
        r[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
        r[1][j] = 0.5f * (m[1][j] - m[2][j]);
        r[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
      }
      float* k = dw + (oc * pl.C + c) * 9;
      for (int i = 0; i < 3; ++i) {  // (G^T m) G
        k[i * 3 + 0] += r[i][0] + 0.5f * (r[i][1] + r[i][2]);
        k[i * 3 + 1] += 0.5f * (r[i][1] - r[i][2]);
        k[i * 3 + 2] += 0.5f * (r[i][1] + r[i][2]) + r[i][3];
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
  const Plan pl(g);
  thread_local std::vector<float> ubuf;  // the calling thread's; the tasks only read it
  float* U = lanes::zeroed_scratch(ubuf, 16 * pl.OC * pl.C);
  transform_weights(w, o.scale, pl, U);
  auto run = [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> xbuf, vbuf, mbuf, rbuf;
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * L);  // border stays zero
    float* V = lanes::zeroed_scratch(vbuf, 16 * pl.CB * pl.TB * L);
    float* M = lanes::zeroed_scratch(mbuf, 16 * pl.OB * pl.TB * L);
    float* R = lanes::zeroed_scratch(rbuf, 2 * 2 * pl.TW * L);
    for (int64_t n = lo; n < hi; ++n) {
      fill(x + n * pl.C * pl.H * pl.W, pl.CB, pl, X);
      for (int64_t ty0 = 0; ty0 < pl.TH;
           ty0 += pl.RB) {  // blocks of tile rows: V and M stay in cache
        const int64_t ty1 = std::min(pl.TH, ty0 + pl.RB);
        transform_input(X, pl, ty0, ty1, V);
        multiply(U, V, pl, (ty1 - ty0) * pl.TW, M);
        transform_output(M, pl, o, n, ty0, ty1, R, out);
      }
    }
  };
  if (in_parallel_region())
    run(n_lo, n_hi);
  else
    parallel_for(n_lo, n_hi, 1, run);
}

void weight_grad(const float* d_out, const float* x, const ConvGeometry& g, int64_t n_lo,
                 int64_t n_hi, float* dw) {
  const Plan pl(g);
  // Tasks own output-channel blocks; each sums its part of S over all the
  // samples in order, so the split over threads never changes a bit.
  constexpr int64_t NO = Vec::kGradOut;  // OB is a multiple
  const int64_t tasks = in_parallel_region() ? 1 : pl.OB / NO;
  thread_local std::vector<float> sbuf;  // the calling thread's; tasks write disjoint blocks
  float* S = lanes::zeroed_scratch(sbuf, 16 * pl.OB * pl.C * L);
  parallel_for(0, tasks, 1, [&](int64_t k0, int64_t k1) {
    const int64_t ob0 = tasks == 1 ? 0 : k0 * NO, ob1 = tasks == 1 ? pl.OB : k1 * NO;
    thread_local std::vector<float> xbuf, dbuf, vbuf, zbuf;
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * L);
    float* D = lanes::zeroed_scratch(dbuf, pl.OB * pl.Hx * pl.Wx * L);
    float* V = lanes::zeroed_scratch(vbuf, 16 * pl.CB * pl.TB * L);
    float* Z = lanes::zeroed_scratch(zbuf, 16 * pl.OB * pl.TB * L);
    for (int64_t n = n_lo; n < n_hi; ++n) {
      fill(x + n * pl.C * pl.H * pl.W, pl.CB, pl, X);
      fill(d_out + n * pl.OC * pl.H * pl.W, pl.OB, pl, D);
      for (int64_t ty0 = 0; ty0 < pl.TH; ty0 += pl.RB) {
        const int64_t ty1 = std::min(pl.TH, ty0 + pl.RB), nt = (ty1 - ty0) * pl.TW;
        transform_input(X, pl, ty0, ty1, V);
        transform_gradient(D, pl, ty0, ty1, Z);
        for (int64_t xi = 0; xi < 16; ++xi)
          for (int64_t ob = ob0; ob < ob1; ob += NO)
            for (int64_t c = 0; c < pl.C; c += Vec::kGradC)
              accumulate_tiles(V + (xi * pl.CB + c / L) * pl.TB * L + c % L,
                               Z + (xi * pl.OB + ob) * pl.TB * L, pl.TB * L, nt,
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

#endif

}  // namespace spruce::ops::winograd
