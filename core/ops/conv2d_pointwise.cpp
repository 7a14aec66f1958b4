// Pointwise conv micro-kernels (see conv2d_pointwise.h).
//
// Work: the N * P columns are cut into panels of R; a task packs a chunk of
// up to kChunkColumns columns ([panel][C][R], up to 1.5 MB: it stays in L2) and runs, for each
// block of B output channels (its packed weights [C][B], up to 128 KB, also from L2), the
// micro-kernel on every panel of the chunk. With few columns (batch 1, small planes) tasks also
// split the output-channel blocks, each packing the chunk it needs; tasks are ordered block group
// first, so each thread reads only its own share of the weights (at batch 1 streaming them is most
// of the work). Large planes at stride 1 (AVX-512, 96 pixels or more: MobileNetV1's 28x28, 16x16,
// 14x14 blocks) run on the planes kernel instead: tasks are (sample, tile of 48 pixels), 8 output
// channels x 48 pixels in registers, the input read in place from NCHW and the output stored as
// NCHW rows.
#include "conv2d_pointwise.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "../parallel.h"
#include "conv2d_lanes.h"  // defines SPRUCE_DIRECT_CONV with AVX2 + FMA
#include "packed_weights.h"
#include "scratch.h"

namespace spruce::ops::pointwise {

#ifdef SPRUCE_DIRECT_CONV
namespace {

// Up to 384 columns a task (48 panels of 8, 32 of 12: 1.5 MB at C = 1024,
// in L2): each block of packed weights is read once a chunk, and with 96
// columns MobileNetV1's 2x2 and 4x4 blocks (weights of 1-4 MB) spent ~15 %
// of their time more streaming them.
constexpr int64_t kChunkColumns = 384;
constexpr int64_t kAhead = 32 * 16;  // weight prefetch distance (AVX-512): 16 input channels

/// T[i][0:B] = scale[0:B] * (sum_c xp[c][i] * wp[c][0:B]) + shift[0:B]
/// for the R columns of a panel: the register block. Each sum runs over c
/// in order. The scale is applied here, not folded into the weights, so
/// packed weights do not depend on the batch norm and can be kept.
///
/// Columns come from a packed panel (xp[c * R + i], ld == 0) or from rows
/// (xp[i * ld + c]: a column's channels contiguous, as the fused
/// depthwise-separable pair leaves them); same sums in the same order.
#ifdef __AVX512F__
// R = 12: 24 accumulators, 12 broadcasts and 2 weight loads feed 24 FMAs
// (R = 8: 16 FMAs for 10 loads, ~8 % slower alone, up to 20 % in the 4x4
// and 7x7 layers); R = 8 for few columns (batch 1), which 12 would pad more.
template <int R, bool Rows>
__attribute__((noinline)) void block_avx512(const float* xp, int64_t ld, const float* wp, int64_t C,
                                            const float* scale, const float* shift, float* T) {
  __m512 a[R], b[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) a[i] = _mm512_setzero_ps(), b[i] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c, xp += Rows ? 1 : R, wp += 32) {
    // The weights stream from L2 (a block is C x 128 bytes): fetch ahead.
    _mm_prefetch(reinterpret_cast<const char*>(wp + kAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(wp + kAhead + 16), _MM_HINT_T0);
    const __m512 w0 = _mm512_loadu_ps(wp), w1 = _mm512_loadu_ps(wp + 16);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 v = _mm512_set1_ps(xp[Rows ? i * ld : i]);
      a[i] = _mm512_fmadd_ps(v, w0, a[i]);
      b[i] = _mm512_fmadd_ps(v, w1, b[i]);
    }
  }
  const __m512 s0 = _mm512_loadu_ps(scale), s1 = _mm512_loadu_ps(scale + 16);
  const __m512 h0 = _mm512_loadu_ps(shift), h1 = _mm512_loadu_ps(shift + 16);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    _mm512_storeu_ps(T + 32 * i, _mm512_fmadd_ps(a[i], s0, h0));
    _mm512_storeu_ps(T + 32 * i + 16, _mm512_fmadd_ps(b[i], s1, h1));
  }
}
#endif

template <bool Rows>
__attribute__((noinline)) void block_avx2(const float* xp, int64_t ld, const float* wp, int64_t C,
                                          const float* scale, const float* shift, float* T) {
  constexpr int R = 6;
  __m256 a[R], b[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) a[i] = _mm256_setzero_ps(), b[i] = _mm256_setzero_ps();
  for (int64_t c = 0; c < C; ++c, xp += Rows ? 1 : R, wp += 16) {
    const __m256 w0 = _mm256_loadu_ps(wp), w1 = _mm256_loadu_ps(wp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 v = _mm256_broadcast_ss(xp + (Rows ? i * ld : i));
      a[i] = _mm256_fmadd_ps(v, w0, a[i]);
      b[i] = _mm256_fmadd_ps(v, w1, b[i]);
    }
  }
  const __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8);
  const __m256 h0 = _mm256_loadu_ps(shift), h1 = _mm256_loadu_ps(shift + 8);
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(T + 16 * i, _mm256_fmadd_ps(a[i], s0, h0));
    _mm256_storeu_ps(T + 16 * i + 8, _mm256_fmadd_ps(b[i], s1, h1));
  }
}

/// The largest register block of any kernel (R x B floats): AVX-512's 12 x 32.
constexpr int64_t kMaxBlock = 12 * 32;

/// The register block of one ISA: R columns x B output channels.
struct Kernel {
  int64_t R, B;
  using Block = void (*)(const float*, int64_t, const float*, int64_t, const float*, const float*,
                         float*);
  Block panels, rows;  // columns from packed panels, from rows
};

/// The kernel for `columns` columns: on AVX-512 the wide one unless its
/// panels would pad the columns by 10 % more than the narrow one's.
Kernel kernel_for(Isa isa, int64_t columns) {
#ifdef __AVX512F__
  if (isa == Isa::kAvx512) {
    const int64_t wide = (columns + 11) / 12 * 12, narrow = (columns + 7) / 8 * 8;
    if (10 * wide <= 11 * narrow) return {12, 32, block_avx512<12, false>, block_avx512<12, true>};
    return {8, 32, block_avx512<8, false>, block_avx512<8, true>};
  }
#endif
  (void)isa, (void)columns;
  return {6, 16, block_avx2<false>, block_avx2<true>};
}

/// wp[ob][c][0:B] = w[ob * B + j, c] (zero past OC) for the output-channel
/// blocks ob.
void pack_weights(const float* w, const ConvGeometry& g, int64_t B, float* wp) {
  const int64_t C = g.C, blocks = (g.OC + B - 1) / B;
  parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t ob = lo; ob < hi; ++ob) {
      const int64_t o0 = ob * B, on = std::min(B, g.OC - o0);
      float* dst = wp + ob * C * B;
      for (int64_t h = 0; h < B; h += 8)  // 8 rows of w at a time, transposed
        lanes::planes_to_lanes(w + (o0 + h) * C, C, std::clamp<int64_t>(on - h, 0, 8), C,
                               [&](int64_t c) { return dst + c * B + h; });
    }
  });
}

/// xp[k][c][0:R] = x at the columns [q0 + k R, q0 + (k + 1) R) for the
/// panels k < panels (columns past N * P are zero). Column q is output pixel
/// q % P of sample q / P; at stride 1 a run of columns inside one sample is
/// a run of input pixels, copied per channel, else each is gathered.
void pack_columns(const float* x, const ConvGeometry& g, int64_t R, int64_t q0, int64_t panels,
                  float* xp) {
  const int64_t C = g.C, P = g.P(), Q = g.N * P, HW = g.H * g.W, s = g.stride;
  for (int64_t k = 0; k < panels; ++k) {
    float* panel = xp + k * C * R;
    for (int64_t j = 0; j < R;) {
      const int64_t q = q0 + k * R + j;
      if (q >= Q) {  // past the last column
        for (int64_t c = 0; c < C; ++c) std::fill(panel + c * R + j, panel + c * R + R, 0.f);
        break;
      }
      const int64_t n = q / P, p = q % P;
      if (s != 1) {
        const float* src = x + n * C * HW + (p / g.OW) * s * g.W + (p % g.OW) * s;
        for (int64_t c = 0; c < C; ++c) panel[c * R + j] = src[c * HW];
        ++j;
        continue;
      }
      const int64_t len = std::min(R - j, P - p);
      const float* src = x + n * C * P + p;
      if (len == 8 && R == 8) {
        for (int64_t c = 0; c < C; ++c)
          _mm256_storeu_ps(panel + c * R, _mm256_loadu_ps(src + c * P));
#ifdef __AVX512F__
      } else if (len == 12 && R == 12) {
        for (int64_t c = 0; c < C; ++c)
          _mm512_mask_storeu_ps(panel + c * R, 0x0FFF, _mm512_maskz_loadu_ps(0x0FFF, src + c * P));
#endif
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < len; ++i) panel[c * R + j + i] = src[c * P + i];
      }
      j += len;
    }
  }
}

/// out (NCHW) = the R x B block T of the columns [q, q + R) and the output
/// channels [o0, o0 + B), finished by o (residual, ReLU).
void write_block(const float* T, const ConvGeometry& g, const ConvOutput& o, int64_t R, int64_t B,
                 int64_t q, int64_t o0, float* out) {
  const int64_t P = g.P(), Q = g.N * P, on = std::min(B, g.OC - o0);
  for (int64_t j = 0; j < R && q + j < Q;) {
    const int64_t n = (q + j) / P, p = (q + j) % P;
    const int64_t len = std::min({R - j, P - p, Q - q - j});
    for (int64_t h = 0; h < on; h += 8) {
      const int64_t at = (n * g.OC + o0 + h) * P + p;
      lanes::lanes_to_planes<false>([&](int64_t l) { return T + (j + l) * B + h; }, len,
                                    std::min<int64_t>(8, on - h), out + at, P, o,
                                    o.residual ? o.residual + at : nullptr);
    }
    j += len;
  }
}

Scratch& weight_scratch() {  // packed weights when uncached (calling thread)
  thread_local Scratch s;
  return s;
}

Scratch& epilogue_scratch() {  // per-channel scale and shift (calling thread)
  thread_local Scratch s;
  return s;
}

Scratch& panel_scratch() {  // a task's packed columns
  thread_local Scratch s;
  return s;
}

}  // namespace

Isa best_isa() {
#ifdef __AVX512F__
  return Isa::kAvx512;
#else
  return Isa::kAvx2;
#endif
}

bool supports(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.padding == 0 && g.groups == 1 && g.C > 0 && g.OC > 0 &&
         g.N * g.P() > 0;
}

namespace {

/// A call's weights packed in blocks of B output channels (the kept copy
/// when `version` is given, held for the call; else this thread's scratch)
/// and the per-channel scale (1 without one) and shift (0 without one),
/// padded to whole blocks. `layout` tells the kernels' packings apart in
/// the kept-copy cache.
struct Prepared {
  std::shared_ptr<const std::vector<float>> kept;
  const float *w, *scale, *shift;
};

Prepared prepare(const float* w, const ConvOutput& o, const ConvGeometry& g, int64_t B,
                 int64_t layout, const ContentVersion* version) {
  const int64_t C = g.C, blocks = (g.OC + B - 1) / B;
  Prepared p{};
  if (version) {
    const PackedWeightKey key{*version, w, {C, g.OC, B, layout}};
    p.kept = packed_weights(key, blocks * B * C, [&](float* dst) { pack_weights(w, g, B, dst); });
    p.w = p.kept->data();
  } else {
    float* dst = weight_scratch().get(blocks * B * C);
    pack_weights(w, g, B, dst);
    p.w = dst;
  }
  float* scale = epilogue_scratch().get(2 * blocks * B);
  float* shift = scale + blocks * B;
  for (int64_t j = 0; j < blocks * B; ++j) {
    scale[j] = j < g.OC && o.scale ? o.scale[j] : 1.f;
    shift[j] = j < g.OC && o.shift ? o.shift[j] : 0.f;
  }
  p.scale = scale, p.shift = shift;
  return p;
}

/// forward() and forward_rows(): x is NCHW (ld == 0, packed per panel) or
/// one row of ld floats per column (read in place).
void run(const float* x, int64_t ld, const float* w, const ConvOutput& o, const ConvGeometry& g,
         float* out, Isa isa, const ContentVersion* version) {
  const Kernel k = kernel_for(isa, g.N * g.P());
  const int64_t R = k.R, B = k.B, C = g.C;
  const int64_t blocks = (g.OC + B - 1) / B;
  const Prepared prep = prepare(w, o, g, B, 0, version);
  const float *wp = prep.w, *scale = prep.scale, *shift = prep.shift;

  const int64_t Q = g.N * g.P(), panels = (Q + R - 1) / R;
  const int64_t threads = in_parallel_region() ? 1 : num_threads();
  // Chunks of panels, smaller when there are too few to keep every thread
  // busy: whole rounds over the threads, of sizes that differ by one at most
  // (43 panels on 2 threads: 6 chunks of 7-8, not 4 of 10 and one of 3).
  const int64_t most = std::clamp<int64_t>(panels / (2 * threads), 1, kChunkColumns / R);
  int64_t chunks = (panels + most - 1) / most;
  if (chunks > 1) chunks = std::min(panels, (chunks + threads - 1) / threads * threads);
  const int64_t per_chunk = (panels + chunks - 1) / chunks;  // the largest
  // Few chunks (batch 1): the output-channel blocks are split too.
  const int64_t groups = std::clamp<int64_t>((2 * threads + chunks - 1) / chunks, 1, blocks);
  const int64_t per_group = (blocks + groups - 1) / groups;
  parallel_for(0, chunks * groups, 1, [&](int64_t t0, int64_t t1) {
    float* xp = ld ? nullptr : panel_scratch().get(per_chunk * C * R);
    alignas(64) float T[kMaxBlock];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t gr = t / chunks, ch = t % chunks;  // a thread keeps to few weight blocks
      const int64_t p0 = ch * panels / chunks, np = (ch + 1) * panels / chunks - p0;
      if (!ld) pack_columns(x, g, R, p0 * R, np, xp);
      for (int64_t ob = gr * per_group; ob < std::min(blocks, (gr + 1) * per_group); ++ob)
        for (int64_t kp = 0; kp < np; ++kp) {
          if (ld)
            k.rows(x + (p0 + kp) * R * ld, ld, wp + ob * C * B, C, scale + ob * B, shift + ob * B,
                   T);
          else
            k.panels(xp + kp * C * R, 0, wp + ob * C * B, C, scale + ob * B, shift + ob * B, T);
          write_block(T, g, o, R, B, (p0 + kp) * R, ob * B, out);
        }
    }
  });
}

#ifdef __AVX512F__
constexpr int64_t kPlaneJ = 8;                // output channels per register block
constexpr int64_t kPlaneV = 3;                // pixel vectors per register block
constexpr int64_t kPlaneTile = 16 * kPlaneV;  // pixels per register block

/// out[n, o0 + j, p0 + i] for j < oc (<= 8), i < 16 V (pixels < P only): the
/// input plane x[c][p0 + i] (rows P apart) times the packed weights
/// wp[c][0:8], 8 x V vectors of 16 pixels in registers, finished as
/// write_block() does (scale, shift, residual, ReLU) and stored straight
/// into the NCHW planes: no packing, no transposes. Sums over c in order.
template <int V>
__attribute__((noinline)) void plane_block_avx512(const float* x, int64_t P, int64_t n_pix,
                                                  const float* wp, int64_t C, int64_t oc,
                                                  const float* scale, const float* shift,
                                                  const ConvOutput& o, const float* res,
                                                  float* out) {
  __mmask16 m[V];
  for (int v = 0; v < V; ++v)
    m[v] = static_cast<__mmask16>(
        _bzhi_u32(0xFFFF, static_cast<unsigned>(std::clamp<int64_t>(n_pix - 16 * v, 0, 16))));
  __m512 a[kPlaneJ][V];
#pragma GCC unroll 8
  for (int j = 0; j < kPlaneJ; ++j)
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) a[j][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c, x += P, wp += kPlaneJ) {
    __m512 xv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) xv[v] = _mm512_maskz_loadu_ps(m[v], x + 16 * v);
#pragma GCC unroll 8
    for (int j = 0; j < kPlaneJ; ++j) {
      const __m512 wj = _mm512_set1_ps(wp[j]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) a[j][v] = _mm512_fmadd_ps(xv[v], wj, a[j][v]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kPlaneJ; ++j) {
    if (j >= oc) break;
    const __m512 sj = _mm512_set1_ps(scale[j]), hj = _mm512_set1_ps(shift[j]);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      __m512 y = _mm512_fmadd_ps(a[j][v], sj, hj);
      if (o.residual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m[v], res + j * P + 16 * v));
      if (o.relu) y = _mm512_maskz_max_ps(0xFFFF, y, _mm512_setzero_ps());  // NaN -> 0, as finish8
      _mm512_mask_storeu_ps(out + j * P + 16 * v, m[v], y);
    }
  }
}

/// forward() at stride 1 on large planes (AVX-512): tasks are (sample, tile
/// of 48 pixels), each running every block of 8 output channels on its
/// tile, whose C x 48 inputs stay in L1.
void run_planes(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                float* out, const ContentVersion* version) {
  const int64_t C = g.C, P = g.P(), B = kPlaneJ;
  const int64_t blocks = (g.OC + B - 1) / B;
  const Prepared prep = prepare(w, o, g, B, 1, version);
  const float *wp = prep.w, *scale = prep.scale, *shift = prep.shift;
  const int64_t tiles = (P + kPlaneTile - 1) / kPlaneTile;
  parallel_for(0, g.N * tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / tiles, p0 = t % tiles * kPlaneTile;
      const float* xt = x + n * C * P + p0;
      // A plane's last tile runs as wide as its pixels need (784 = 16 x 48 + 16).
      const int64_t vectors = std::min<int64_t>(kPlaneV, (P - p0 + 15) / 16);
      const auto block = vectors == 3   ? plane_block_avx512<3>
                         : vectors == 2 ? plane_block_avx512<2>
                                        : plane_block_avx512<1>;
      for (int64_t ob = 0; ob < blocks; ++ob) {
        const int64_t o0 = ob * B, at = (n * g.OC + o0) * P + p0;
        block(xt, P, std::min(kPlaneTile, P - p0), wp + ob * C * B, C, std::min(B, g.OC - o0),
              scale + o0, shift + o0, o, o.residual ? o.residual + at : nullptr, out + at);
      }
    }
  });
}
#endif

}  // namespace

int64_t rows_padding(Isa isa) {
  return kernel_for(isa, int64_t{1} << 30).R;  // many columns take the widest panel
}

bool planes_kernel(const ConvGeometry& g, Isa isa) {
#ifdef __AVX512F__
  // Two tiles per plane at least: below, the panels waste fewer lanes.
  return isa == Isa::kAvx512 && g.stride == 1 && g.P() >= 2 * kPlaneTile;
#else
  (void)g, (void)isa;
  return false;
#endif
}

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g, float* out,
             Isa isa, const ContentVersion* version) {
#ifdef __AVX512F__
  if (planes_kernel(g, isa)) return run_planes(x, w, o, g, out, version);
#endif
  run(x, 0, w, o, g, out, isa, version);
}

void forward_rows(const float* x, int64_t ld, const float* w, const ConvOutput& o,
                  const ConvGeometry& g, float* out, Isa isa, const ContentVersion* version) {
  run(x, ld, w, o, g, out, isa, version);
}

#else  // no AVX2 + FMA: conv2d keeps pointwise convs on its GEMM path

Isa best_isa() { return Isa::kNone; }
bool supports(const ConvGeometry&) { return false; }
int64_t rows_padding(Isa) { return 0; }
bool planes_kernel(const ConvGeometry&, Isa) { return false; }
void forward(const float*, const float*, const ConvOutput&, const ConvGeometry&, float*, Isa,
             const ContentVersion*) {}
void forward_rows(const float*, int64_t, const float*, const ConvOutput&, const ConvGeometry&,
                  float*, Isa, const ContentVersion*) {}

#endif

}  // namespace spruce::ops::pointwise
