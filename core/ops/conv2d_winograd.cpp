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
// Per sample:
//   1. x (NCHW) -> X, zero-padded, 16 channels per pixel vector (8x8 transposes);
//   2. V = B^T d B for every tile, 16 channels a vector;
//   3. the 16 products above, on 1..8 tiles x 16 output channels in registers
//      (per input channel one weight load and an FMA with an embedded
//      broadcast per tile);
//   4. Y = A^T M A + shift, 16 output channels a vector, into two output rows
//      of [pixel][16], which go back to NCHW through lanes::untranspose (with
//      the residual and ReLU of a fused conv).
// Layouts (floats): X [CB][Hx][Wx][16], V [16][CB][TB][16], M [16][OB][TB][16],
// U [16][OB][C][16], with CB = C / 16, OB = OC / 16, and V and M for a block of
// TB tiles (whole tile rows, about 16 tiles: V and M stay in the L1 cache).
#include "conv2d_winograd.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "../parallel.h"
#include "conv2d_lanes.h"

namespace spruce::ops::winograd {

#if defined(SPRUCE_DIRECT_CONV) && defined(__AVX512F__)
namespace {

struct Plan {
  int64_t C, H, W, OC, CB, OB, TH, TW, Hx, Wx;
  int64_t RB, TB;           // tile rows per block, tiles per block: V and M hold one block
  std::vector<int32_t> at;  // [H * W]: pixel l's vector in a padded buffer, in floats
  explicit Plan(const ConvGeometry& g)
      : C(g.C), H(g.H), W(g.W), OC(g.OC), CB(g.C / 16), OB(g.OC / 16) {
    TH = (H + 1) / 2, TW = (W + 1) / 2;
    Hx = 2 * TH + 2, Wx = 2 * TW + 2;  // one row / column of padding before, the rest after
    RB = std::clamp<int64_t>(16 / TW, 1, TH), TB = RB * TW;
    at.resize(static_cast<size_t>(H * W));
    for (int64_t l = 0; l < H * W; ++l)
      at[static_cast<size_t>(l)] = static_cast<int32_t>(((1 + l / W) * Wx + 1 + l % W) * 16);
  }
};

/// U[xi][ob][c][16] = (G g G^T)[xi] of w[oc, c] times scale[oc] (null: 1);
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
          U[(((i * 4 + j) * pl.OB + oc / 16) * pl.C + c) * 16 + oc % 16] = u[j] * a;
      }
    }
}

/// X[cb][1 + r][1 + col][0:16] = x[16 cb + 0:16][r][col] for the channel
/// blocks cb < blocks of one sample's H x W planes: into the interior of the
/// padded pixel-vector buffer (the border stays zero).
void fill(const float* x, int64_t blocks, const Plan& pl, float* X) {
  const int64_t plane = pl.H * pl.W;
  for (int64_t cb = 0; cb < blocks; ++cb) {
    float* dst = X + cb * pl.Hx * pl.Wx * 16;
    lanes::planes_to_lanes<2>(x + cb * 16 * plane, plane, 16, plane,
                              [&](int64_t l) { return dst + pl.at[static_cast<size_t>(l)]; });
  }
}

/// V[xi][cb][t] = (B^T d B)[xi] for the tiles t of the tile rows [ty0,
/// ty1) (t counted from the block's first tile) and every channel block cb.
void transform_input(const float* X, const Plan& pl, int64_t ty0, int64_t ty1, float* V) {
  const int64_t xi_stride = pl.CB * pl.TB * 16;
  for (int64_t cb = 0; cb < pl.CB; ++cb)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        const float* d = X + ((cb * pl.Hx + 2 * ty) * pl.Wx + 2 * tx) * 16;
        __m512 a[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
          const __m512 d0 = _mm512_loadu_ps(d + j * 16), d1 = _mm512_loadu_ps(d + (pl.Wx + j) * 16);
          const __m512 d2 = _mm512_loadu_ps(d + (2 * pl.Wx + j) * 16);
          const __m512 d3 = _mm512_loadu_ps(d + (3 * pl.Wx + j) * 16);
          a[0][j] = _mm512_sub_ps(d0, d2), a[1][j] = _mm512_add_ps(d1, d2);
          a[2][j] = _mm512_sub_ps(d2, d1), a[3][j] = _mm512_sub_ps(d1, d3);
        }
        float* v = V + (cb * pl.TB + (ty - ty0) * pl.TW + tx) * 16;
        for (int i = 0; i < 4; ++i) {  // (B^T d) B
          _mm512_storeu_ps(v + (i * 4 + 0) * xi_stride, _mm512_sub_ps(a[i][0], a[i][2]));
          _mm512_storeu_ps(v + (i * 4 + 1) * xi_stride, _mm512_add_ps(a[i][1], a[i][2]));
          _mm512_storeu_ps(v + (i * 4 + 2) * xi_stride, _mm512_sub_ps(a[i][2], a[i][1]));
          _mm512_storeu_ps(v + (i * 4 + 3) * xi_stride, _mm512_sub_ps(a[i][1], a[i][3]));
        }
      }
}

/// m[i][0:16] = sum_c u[c][0:16] v[cb(c)][i][c % 16] for NT tiles i: v
/// points at the first tile of channel block 0, blocks cb_stride apart.
template <int NT>
void multiply_tiles(const float* v, int64_t cb_stride, int64_t CB, const float* u, float* m) {
  __m512 acc[NT];
#pragma GCC unroll 8
  for (int i = 0; i < NT; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t cb = 0; cb < CB; ++cb, v += cb_stride, u += 256) {
#pragma GCC unroll 16
    for (int cc = 0; cc < 16; ++cc) {
      const __m512 w = _mm512_loadu_ps(u + cc * 16);
#pragma GCC unroll 8
      for (int i = 0; i < NT; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(v[i * 16 + cc]), w, acc[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < NT; ++i) _mm512_storeu_ps(m + i * 16, acc[i]);
}

using MultiplyFn = void (*)(const float*, int64_t, int64_t, const float*, float*);
constexpr MultiplyFn kMultiply[8] = {multiply_tiles<1>, multiply_tiles<2>, multiply_tiles<3>,
                                     multiply_tiles<4>, multiply_tiles<5>, multiply_tiles<6>,
                                     multiply_tiles<7>, multiply_tiles<8>};

/// M = U V for the 16 positions, all output-channel blocks and the nt
/// tiles of a block.
void multiply(const float* U, const float* V, const Plan& pl, int64_t nt_all, float* M) {
  const int64_t cb_stride = pl.TB * 16;
  for (int64_t xi = 0; xi < 16; ++xi)
    for (int64_t ob = 0; ob < pl.OB; ++ob) {
      const float* u = U + (xi * pl.OB + ob) * pl.C * 16;
      float* m = M + (xi * pl.OB + ob) * pl.TB * 16;
      const float* v = V + xi * pl.CB * pl.TB * 16;
      for (int64_t t = 0; t < nt_all; t += 8) {
        const int64_t nt = std::min<int64_t>(8, nt_all - t);
        kMultiply[nt - 1](v + t * 16, cb_stride, pl.CB, u, m + t * 16);
      }
    }
}

/// out[n] = A^T M A + shift for the tile rows [ty0, ty1), finished by o
/// (residual, ReLU), in NCHW: one tile row at a time through two
/// [pixel][16] rows R.
void transform_output(const float* M, const Plan& pl, const ConvOutput& o, int64_t n, int64_t ty0,
                      int64_t ty1, float* R, float* out) {
  const int64_t P = pl.H * pl.W, xi_stride = pl.OB * pl.TB * 16, rw = 2 * pl.TW * 16;
  for (int64_t ob = 0; ob < pl.OB; ++ob) {
    const __m512 shift = o.shift ? _mm512_loadu_ps(o.shift + ob * 16) : _mm512_setzero_ps();
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        const float* m = M + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * 16;
        __m512 s[2][4];  // A^T M
        for (int j = 0; j < 4; ++j) {
          const __m512 m0 = _mm512_loadu_ps(m + j * xi_stride);
          const __m512 m1 = _mm512_loadu_ps(m + (4 + j) * xi_stride);
          const __m512 m2 = _mm512_loadu_ps(m + (8 + j) * xi_stride);
          const __m512 m3 = _mm512_loadu_ps(m + (12 + j) * xi_stride);
          s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
          s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        for (int i = 0; i < 2; ++i) {  // (A^T M) A + shift
          float* r = R + i * rw + 2 * tx * 16;
          const __m512 y0 = _mm512_add_ps(_mm512_add_ps(s[i][0], s[i][1]), s[i][2]);
          const __m512 y1 = _mm512_sub_ps(_mm512_sub_ps(s[i][1], s[i][2]), s[i][3]);
          _mm512_storeu_ps(r, _mm512_add_ps(y0, shift));
          _mm512_storeu_ps(r + 16, _mm512_add_ps(y1, shift));
        }
      }
      for (int64_t i = 0; i < 2 && 2 * ty + i < pl.H; ++i) {
        const int64_t at = (n * pl.OC + ob * 16) * P + (2 * ty + i) * pl.W;
        lanes::untranspose<false>(R + i * rw, pl.W, 16, out + at, P, o,
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
// G^T S G once at the end. Layouts: D [OB][Hx][Wx][16] (the output gradient
// as pixel vectors, zero past OH x OW), Z [16][OB][TB][16], S [16][OB][C][16].

/// Z[xi][ob][t] = (A D A^T)[xi] for the tiles of the tile rows [ty0, ty1).
void transform_gradient(const float* D, const Plan& pl, int64_t ty0, int64_t ty1, float* Z) {
  const int64_t xi_stride = pl.OB * pl.TB * 16;
  for (int64_t ob = 0; ob < pl.OB; ++ob)
    for (int64_t ty = ty0; ty < ty1; ++ty)
      for (int64_t tx = 0; tx < pl.TW; ++tx) {
        // The tile's outputs (2 ty + k, 2 tx + l) sit at D[1 + 2 ty + k][1 + 2 tx + l].
        const float* d = D + ((ob * pl.Hx + 1 + 2 * ty) * pl.Wx + 1 + 2 * tx) * 16;
        const __m512 d00 = _mm512_loadu_ps(d), d01 = _mm512_loadu_ps(d + 16);
        const __m512 d10 = _mm512_loadu_ps(d + pl.Wx * 16),
                     d11 = _mm512_loadu_ps(d + (pl.Wx + 1) * 16);
        // A D: rows D0, D0 + D1, D0 - D1, -D1 (two columns each)
        const __m512 e[4][2] = {
            {d00, d01},
            {_mm512_add_ps(d00, d10), _mm512_add_ps(d01, d11)},
            {_mm512_sub_ps(d00, d10), _mm512_sub_ps(d01, d11)},
            {_mm512_sub_ps(_mm512_setzero_ps(), d10), _mm512_sub_ps(_mm512_setzero_ps(), d11)}};
        float* z = Z + (ob * pl.TB + (ty - ty0) * pl.TW + tx) * 16;
        for (int i = 0; i < 4; ++i) {  // (A D) A^T: columns e0, e0 + e1, e0 - e1, -e1
          _mm512_storeu_ps(z + (i * 4 + 0) * xi_stride, e[i][0]);
          _mm512_storeu_ps(z + (i * 4 + 1) * xi_stride, _mm512_add_ps(e[i][0], e[i][1]));
          _mm512_storeu_ps(z + (i * 4 + 2) * xi_stride, _mm512_sub_ps(e[i][0], e[i][1]));
          _mm512_storeu_ps(z + (i * 4 + 3) * xi_stride,
                           _mm512_sub_ps(_mm512_setzero_ps(), e[i][1]));
        }
      }
}

/// s[cc][0:16] += sum over the nt tiles t of v[t][cc] z[t][0:16], for the 16
/// input channels cc of a block: 16 accumulators, per tile one gradient
/// load and 16 FMAs with an embedded broadcast.
void accumulate_tiles(const float* v, const float* z, int64_t nt, float* s) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int cc = 0; cc < 16; ++cc) acc[cc] = _mm512_loadu_ps(s + cc * 16);
  for (int64_t t = 0; t < nt; ++t, v += 16, z += 16) {
    const __m512 g = _mm512_loadu_ps(z);
#pragma GCC unroll 16
    for (int cc = 0; cc < 16; ++cc) acc[cc] = _mm512_fmadd_ps(_mm512_set1_ps(v[cc]), g, acc[cc]);
  }
#pragma GCC unroll 16
  for (int cc = 0; cc < 16; ++cc) _mm512_storeu_ps(s + cc * 16, acc[cc]);
}

/// dw[oc][c] += G^T S[.][c][oc] G (3x3) for every channel pair.
void add_weight_gradient(const float* S, const Plan& pl, float* dw) {
  for (int64_t oc = 0; oc < pl.OC; ++oc)
    for (int64_t c = 0; c < pl.C; ++c) {
      float m[4][4];
      for (int xi = 0; xi < 16; ++xi)
        m[xi / 4][xi % 4] = S[((xi * pl.OB + oc / 16) * pl.C + c) * 16 + oc % 16];
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
  const bool small_plane = (g.H + 3) * (g.W + 3) * 16 < std::numeric_limits<int32_t>::max() / 2;
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
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * 16);  // border stays zero
    float* V = lanes::zeroed_scratch(vbuf, 16 * pl.CB * pl.TB * 16);
    float* M = lanes::zeroed_scratch(mbuf, 16 * pl.OB * pl.TB * 16);
    float* R = lanes::zeroed_scratch(rbuf, 2 * 2 * pl.TW * 16);
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
  const int64_t tasks = in_parallel_region() ? 1 : pl.OB;
  thread_local std::vector<float> sbuf;  // the calling thread's; tasks write disjoint blocks
  float* S = lanes::zeroed_scratch(sbuf, 16 * pl.OB * pl.C * 16);
  parallel_for(0, tasks, 1, [&](int64_t k0, int64_t k1) {
    const int64_t ob0 = tasks == 1 ? 0 : k0, ob1 = tasks == 1 ? pl.OB : k1;
    thread_local std::vector<float> xbuf, dbuf, vbuf, zbuf;
    float* X = lanes::zeroed_scratch(xbuf, pl.CB * pl.Hx * pl.Wx * 16);
    float* D = lanes::zeroed_scratch(dbuf, pl.OB * pl.Hx * pl.Wx * 16);
    float* V = lanes::zeroed_scratch(vbuf, 16 * pl.CB * pl.TB * 16);
    float* Z = lanes::zeroed_scratch(zbuf, 16 * pl.OB * pl.TB * 16);
    for (int64_t n = n_lo; n < n_hi; ++n) {
      fill(x + n * pl.C * pl.H * pl.W, pl.CB, pl, X);
      fill(d_out + n * pl.OC * pl.H * pl.W, pl.OB, pl, D);
      for (int64_t ty0 = 0; ty0 < pl.TH; ty0 += pl.RB) {
        const int64_t ty1 = std::min(pl.TH, ty0 + pl.RB), nt = (ty1 - ty0) * pl.TW;
        transform_input(X, pl, ty0, ty1, V);
        transform_gradient(D, pl, ty0, ty1, Z);
        for (int64_t xi = 0; xi < 16; ++xi)
          for (int64_t ob = ob0; ob < ob1; ++ob)
            for (int64_t cb = 0; cb < pl.CB; ++cb)
              accumulate_tiles(V + (xi * pl.CB + cb) * pl.TB * 16,
                               Z + (xi * pl.OB + ob) * pl.TB * 16, nt,
                               S + ((xi * pl.OB + ob) * pl.C + cb * 16) * 16);
      }
    }
  });
  add_weight_gradient(S, pl, dw);
}

#else  // without AVX-512 the direct kernel handles these convs

bool supports(const ConvGeometry&) { return false; }

void forward(const float*, const float*, const ConvOutput&, const ConvGeometry&, int64_t, int64_t,
             float*) {}

void weight_grad(const float*, const float*, const ConvGeometry&, int64_t, int64_t, float*) {}

#endif

}  // namespace spruce::ops::winograd
