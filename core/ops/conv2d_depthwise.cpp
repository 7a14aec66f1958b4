// Depthwise convolutions (see conv2d_depthwise.h): the choice of kernel, and
// the portable kernel.
//
// The portable kernel zero-pads each input plane and splits it into
// stride x stride "phase" planes
//   phase[r][t][i][j] = x_padded[i * stride + r][j * stride + t],
// so every kernel tap reads one phase plane at a constant offset, whatever
// the stride. Outputs are computed on a grid of row length Wq (the phase
// width; columns >= W_out are discarded), so a tap is one long contiguous
// loop, fused over all taps, that g++ -O3 vectorises however narrow the image
// is; a block of samples of one channel shares each loop, which keeps 2x2 and
// 4x4 planes from being all loop overhead. The input gradient is the same
// kernel in gather form over a zero-framed copy of the output gradient, and
// the weight gradient is one dot product per tap. A fused output (ConvOutput)
// is finished plane by plane after the taps.
#include "conv2d_depthwise.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "../parallel.h"
#include "scratch.h"

namespace spruce::ops::depthwise {

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out) {
  if (tiles::supports(g))
    tiles::forward(x, w, o, g, out);
  else
    portable::forward(x, w, o, g, out);
}

void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw) {
  if (tiles::supports(g))
    tiles::backward(d_out, x, w, g, dx, dx_fresh, dw);
  else
    portable::backward(d_out, x, w, g, dx, dx_fresh, dw);
}

namespace portable {
namespace {

// Samples of one channel are grouped so one loop spans ~this many floats
// (big planes: one sample per loop; 4x4 planes: about ten).
constexpr int64_t kDepthwiseBlockFloats = 512;
// Below this input width, data moves through index lists, not row memcpys.
constexpr int64_t kNarrowWidth = 16;

/// dst[j] = (accumulate ? dst[j] : init) + sum_t w[t] * src[t][j] for j < n,
/// with T a compile-time tap count so the tap loop unrolls and the j loop
/// vectorises; each output is summed in tap order (deterministic).
template <int T>
void taps_block(float* __restrict dst, int64_t n, const float* const* src, const float* w,
                bool accumulate, float init) {
  std::array<const float*, T> s;
  std::array<float, T> wt;
  for (int t = 0; t < T; ++t) s[t] = src[t], wt[t] = w[t];
  if (accumulate) {
    for (int64_t j = 0; j < n; ++j) {
      float a = dst[j];
      for (int t = 0; t < T; ++t) a += wt[t] * s[t][j];
      dst[j] = a;
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      float a = init;
      for (int t = 0; t < T; ++t) a += wt[t] * s[t][j];
      dst[j] = a;
    }
  }
}

// Taps fused into one loop (register budget: 9 sources, 9 weights, a sum).
constexpr int kMaxFused = 9;

/// taps_block<1> ... taps_block<kMaxFused>, indexed by tap count - 1.
template <int... I>
constexpr auto taps_block_table(std::integer_sequence<int, I...>) {
  return std::array{&taps_block<I + 1>...};
}
constexpr auto kTapsBlock = taps_block_table(std::make_integer_sequence<int, kMaxFused>{});

/// dst[j] = init + sum over `taps` taps of w[t] * src[t][j], in blocks of up
/// to kMaxFused fused taps (a 3x3 kernel is a single pass over dst).
void taps_sum(float* dst, int64_t n, const float* const* src, const float* w, int64_t taps,
              float init) {
  if (taps == 0) {
    std::fill(dst, dst + n, init);
    return;
  }
  for (int64_t t0 = 0; t0 < taps; t0 += kMaxFused) {
    const bool acc = t0 > 0;
    const float* const* s = src + t0;
    const float* wt = w + t0;
    kTapsBlock[std::min<int64_t>(kMaxFused, taps - t0) - 1](dst, n, s, wt, acc, init);
  }
}

// Eight floats as one value (GCC/Clang vector extension; SSE or AVX as the
// target allows). Used where the auto-vectoriser fails: with one accumulator
// per tap it vectorises across taps with gathers instead of along j.
using Vec8 = float __attribute__((vector_size(32)));
inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// out[t] = sum_j g[j] * src[t][j] for t < T (T compile-time): all taps in one
/// pass over g, each with 8 lanes; every sum is formed in a fixed order
/// (lanes, then the tail), so the result does not depend on threads.
template <int T>
void taps_dot_block(const float* g, int64_t n, const float* const* src, float* out) {
  Vec8 acc[T] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const Vec8 gv = load8(g + j);
    for (int t = 0; t < T; ++t) acc[t] += gv * load8(src[t] + j);
  }
  for (int t = 0; t < T; ++t) {
    float sum = 0.f;
    for (int64_t k = j; k < n; ++k) sum += g[k] * src[t][k];
    for (int l = 0; l < 8; ++l) sum += acc[t][l];
    out[t] = sum;
  }
}

template <int... I>
constexpr auto taps_dot_table(std::integer_sequence<int, I...>) {
  return std::array{&taps_dot_block<I + 1>...};
}
constexpr auto kTapsDotBlock = taps_dot_table(std::make_integer_sequence<int, kMaxFused>{});

/// out[t] = sum_j g[j] * src[t][j] for t < taps, in blocks of up to kMaxFused taps.
void taps_dot(const float* g, int64_t n, const float* const* src, int64_t taps, float* out) {
  for (int64_t t0 = 0; t0 < taps; t0 += kMaxFused) {
    const float* const* s = src + t0;
    float* o = out + t0;
    kTapsDotBlock[std::min<int64_t>(kMaxFused, taps - t0) - 1](g, n, s, o);
  }
}

/// Where everything lives in the depthwise kernel. A task handles one channel
/// for a block of B samples. Each sample b gets a slot of S floats in every
/// buffer, so a whole block is processed by single long loops (small planes,
/// like MobileNet's 2x2 and 4x4, would otherwise be all loop overhead):
///   phases  ph[phase][b * S + i * Wq + j], phase = r * PT + t, each phase
///           region phase_stride = B * S (+ slack) floats long
///   grid    out_grid[b * S + oh * Wq + ow]: outputs on the Wq-wide grid
///   G       gb[b * S + g0 + oh * Wq + ow]: the output gradient, inside a zero
///           frame of TR rows above and below and `lead` floats before
/// Slot contents outside the image / outside the valid grid are zero, so the
/// junk that long loops compute between samples is never read back, and the
/// products that dots pick up there vanish.
struct DepthwisePlan {
  ConvGeometry g;
  int64_t s = 1;                    // stride
  int64_t PR = 1, PT = 1;           // phases used along rows / columns: min(stride, kernel)
  int64_t Hq = 0, Wq = 0;           // phase plane rows / columns
  int64_t plane = 0;                // Hq * Wq
  int64_t TR = 0, lead = 0;         // G frame: rows above/below, floats before
  int64_t g0 = 0;                   // offset of G[0][0] in a slot
  int64_t S = 0;                    // slot size per sample
  int64_t B = 1;                    // samples per block
  int64_t phase_stride = 0;         // floats per phase region (B slots + overrun slack)
  int64_t row_floats = 0;           // one padded input row cut to s * Wq (stride > 1 only)
  int64_t taps = 0;                 // KH * KW
  std::vector<int64_t> tap_offset;  // tap (kh, kw) reads ph + tap_offset[kh * KW + kw] + J
  // Narrow planes move data through index lists instead of one memcpy per
  // row, whose call overhead dominates rows of 2 to 8 floats:
  bool narrow = false;
  std::vector<int64_t> in_src, in_dst;  // input element in_src[e] -> slot offset in_dst[e]
  std::vector<int64_t> out_pos;         // output element k -> grid offset in a slot

  explicit DepthwisePlan(const ConvGeometry& geo) : g(geo), s(geo.stride) {
    PR = std::min(s, g.KH), PT = std::min(s, g.KW);
    // Output row oh, tap kh reads phase row oh + kh / s (likewise columns).
    Hq = g.OH + (g.KH - 1) / s, Wq = g.OW + (g.KW - 1) / s;
    plane = Hq * Wq;
    TR = (g.KH - 1) / s, lead = (g.KW - 1) / s;
    g0 = lead + TR * Wq;
    // A slot holds the framed G (lead + (OH + 2 TR) Wq), which also covers a
    // phase plane plus the (KW - 1) / s floats a tap reads past its end.
    S = lead + (Hq + TR) * Wq;
    // B depends on shapes only, never on threads: d_weight sums stay fixed.
    B = std::clamp<int64_t>(kDepthwiseBlockFloats / S, 1, g.N);
    phase_stride = B * S + lead + 1;
    row_floats = s * Wq;
    taps = g.KH * g.KW;
    tap_offset.resize(static_cast<size_t>(taps));
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw)
        tap_offset[kh * g.KW + kw] =
            ((kh % s) * PT + kw % s) * phase_stride + (kh / s) * Wq + kw / s;
    narrow = g.W < kNarrowWidth;
    if (narrow) {
      for (int64_t r = 0; r < PR; ++r)
        for (int64_t i = 0; i < Hq; ++i) {
          const int64_t ih = input_row(r, i);
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t t = 0; t < PT; ++t)
            for (int64_t j = 0; j < Wq; ++j) {
              const int64_t iw = j * s + t - g.padding;
              if (iw < 0 || iw >= g.W) continue;
              in_src.push_back(ih * g.W + iw);
              in_dst.push_back((r * PT + t) * phase_stride + i * Wq + j);
            }
        }
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) out_pos.push_back(oh * Wq + ow);
    }
  }

  int64_t blocks() const { return (g.N + B - 1) / B; }
  /// Length of a flat loop over the output grids of `m` samples.
  int64_t grid_span(int64_t m) const { return (m - 1) * S + g.OH * Wq; }
  /// Length of a flat loop over the phase planes of `m` samples.
  int64_t plane_span(int64_t m) const { return (m - 1) * S + plane; }
  /// Phase row i of row phase r is input row i * s + r - padding (maybe outside).
  int64_t input_row(int64_t r, int64_t i) const { return i * s + r - g.padding; }

  /// Writes the phase planes of one input plane [H, W] into slot `ph` (phase
  /// regions phase_stride apart). Only positions inside the image are
  /// written: the buffer must start zeroed, and the padding frame then stays
  /// zero for every plane. For stride > 1, `row` (row_floats, zeroed once and
  /// used only here) holds each input row zero-padded, which a unit-stride
  /// loop then splits into its column phases.
  void build_phases(const float* x, float* ph, float* row) const {
    if (narrow) {
      for (size_t e = 0; e < in_src.size(); ++e) ph[in_dst[e]] = x[in_src[e]];
      return;
    }
    const int64_t pad = g.padding;
    // Input columns [0, cols) land at padded positions [pad, pad + cols).
    const int64_t cols = std::clamp<int64_t>((s == 1 ? Wq : row_floats) - pad, 0, g.W);
    if (cols == 0) return;
    for (int64_t r = 0; r < PR; ++r)
      for (int64_t i = 0; i < Hq; ++i) {
        const int64_t ih = input_row(r, i);
        if (ih < 0 || ih >= g.H) continue;
        float* d = ph + r * PT * phase_stride + i * Wq;  // phase (r, 0)
        const float* src = x + ih * g.W;
        if (s == 1) {
          std::memcpy(d + pad, src, static_cast<size_t>(cols) * sizeof(float));
          continue;
        }
        std::memcpy(row + pad, src, static_cast<size_t>(cols) * sizeof(float));
        if (s == 2 && PT == 2) {  // the common stride-2 case: a vectorisable de-interleave
          float* __restrict d0 = d;
          float* __restrict d1 = d + phase_stride;
          for (int64_t j = 0; j < Wq; ++j) {
            d0[j] = row[2 * j];
            d1[j] = row[2 * j + 1];
          }
        } else {
          for (int64_t t = 0; t < PT; ++t)
            for (int64_t j = 0; j < Wq; ++j) d[t * phase_stride + j] = row[j * s + t];
        }
      }
  }

  /// out [OH, OW] = the valid part of one output grid (row length Wq).
  void grid_to_plane(const float* grid, float* out) const {
    if (narrow) {
      for (size_t k = 0; k < out_pos.size(); ++k) out[k] = grid[out_pos[k]];
      return;
    }
    for (int64_t oh = 0; oh < g.OH; ++oh)
      std::memcpy(out + oh * g.OW, grid + oh * Wq, static_cast<size_t>(g.OW) * sizeof(float));
  }

  /// Writes one output plane [OH, OW] into the valid part of a grid; the
  /// grid's other positions are left as they are (zero).
  void plane_to_grid(const float* plane_in, float* grid) const {
    if (narrow) {
      for (size_t k = 0; k < out_pos.size(); ++k) grid[out_pos[k]] = plane_in[k];
      return;
    }
    for (int64_t oh = 0; oh < g.OH; ++oh)
      std::memcpy(grid + oh * Wq, plane_in + oh * g.OW, static_cast<size_t>(g.OW) * sizeof(float));
  }

  /// dx [H, W] += the phase-plane gradient in slot `dph`: the transpose of
  /// build_phases, through a padded-row scratch `row` (row_floats) of its own.
  void add_unphased(const float* dph, float* dx, float* row) const {
    if (narrow) {  // each input element has exactly one phase position
      for (size_t e = 0; e < in_src.size(); ++e) dx[in_src[e]] += dph[in_dst[e]];
      return;
    }
    const int64_t pad = g.padding;
    for (int64_t r = 0; r < PR; ++r)
      for (int64_t i = 0; i < Hq; ++i) {
        const int64_t ih = input_row(r, i);
        if (ih < 0 || ih >= g.H) continue;
        const float* d = dph + r * PT * phase_stride + i * Wq;
        const float* padded = d;  // padded row position u = iw + pad
        int64_t len = Wq;
        if (s > 1) {
          if (s == 2 && PT == 2) {
            for (int64_t j = 0; j < Wq; ++j) {
              row[2 * j] = d[j];
              row[2 * j + 1] = d[phase_stride + j];
            }
          } else {
            std::fill(row, row + row_floats, 0.f);  // phases t >= PT receive nothing
            for (int64_t t = 0; t < PT; ++t)
              for (int64_t j = 0; j < Wq; ++j) row[j * s + t] = d[t * phase_stride + j];
          }
          padded = row;
          len = row_floats;
        }
        float* __restrict out = dx + ih * g.W;
        const int64_t iw_end = std::clamp<int64_t>(len - pad, 0, g.W);
        for (int64_t iw = 0; iw < iw_end; ++iw) out[iw] += padded[iw + pad];
      }
  }
};

}  // namespace

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
             float* out) {
  const DepthwisePlan plan(g);
  const int64_t HW = g.H * g.W, P = g.P(), S = plan.S, KK = plan.taps;
  const int64_t tasks = plan.blocks() * g.C;
  parallel_for(
      0, tasks, std::max<int64_t>(1, 65536 / (plan.B * S * KK)), [&](int64_t lo, int64_t hi) {
        std::vector<float> ph(static_cast<size_t>(plan.PR * plan.PT * plan.phase_stride), 0.f);
        std::vector<float> row(static_cast<size_t>(plan.row_floats), 0.f);
        std::vector<float> grid(static_cast<size_t>(plan.B * S));
        std::vector<const float*> src(static_cast<size_t>(KK));
        for (int64_t k = 0; k < KK; ++k) src[k] = ph.data() + plan.tap_offset[k];
        for (int64_t task = lo; task < hi; ++task) {  // block-major, then channel: memory order
          const int64_t c = task % g.C, n0 = (task / g.C) * plan.B;
          const int64_t m = std::min(plan.B, g.N - n0);
          for (int64_t b = 0; b < m; ++b)
            plan.build_phases(x + ((n0 + b) * g.C + c) * HW, ph.data() + b * S, row.data());
          // A plain conv starts from its bias; a fused output is finished per plane.
          taps_sum(grid.data(), plan.grid_span(m), src.data(), w + c * KK, KK,
                   o.shift && !o.fused() ? o.shift[c] : 0.f);
          for (int64_t b = 0; b < m; ++b) {
            const int64_t at = ((n0 + b) * g.C + c) * P;
            plan.grid_to_plane(grid.data() + b * S, out + at);
            if (o.fused())
              o.finish_plane(c, out + at, out + at, o.residual ? o.residual + at : nullptr, P);
          }
        }
      });
}

namespace {
Scratch& partial_scratch() {  // per-block d_weight partial sums
  thread_local Scratch s;
  return s;
}
}  // namespace

/// Adds d_input (when dx; assigns it when dx_fresh) and d_weight (when dw).
/// Each (block, channel) task
/// writes its d_weight contribution to its own slot; the slots are summed
/// over blocks afterwards in a fixed order, so the result does not depend on
/// the thread count.
void backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g, float* dx,
              bool dx_fresh, float* dw) {
  const DepthwisePlan plan(g);
  const int64_t HW = g.H * g.W, P = g.P(), Wq = plan.Wq, S = plan.S, s = plan.s;
  const int64_t KK = plan.taps, NB = plan.blocks();
  float* partial = dw ? partial_scratch().get(NB * g.C * KK) : nullptr;  // [NB, C, KK]
  const int64_t work = plan.B * S * KK * ((dw ? 1 : 0) + (dx ? 1 : 0));
  parallel_for(0, NB * g.C, std::max<int64_t>(1, 65536 / work), [&](int64_t lo, int64_t hi) {
    const size_t phases = static_cast<size_t>(plan.PR * plan.PT * plan.phase_stride);
    std::vector<float> ph(dw ? phases : 0, 0.f);
    std::vector<float> dph(dx ? phases : 0);
    std::vector<float> row_in(static_cast<size_t>(plan.row_floats), 0.f);
    std::vector<float> row_out(static_cast<size_t>(plan.row_floats));
    std::vector<float> gb(static_cast<size_t>(plan.B * S), 0.f);
    std::vector<const float*> src(static_cast<size_t>(KK)), tap_src(static_cast<size_t>(KK));
    std::vector<float> wt(static_cast<size_t>(KK));
    if (dw)
      for (int64_t k = 0; k < KK; ++k) tap_src[k] = ph.data() + plan.tap_offset[k];
    float* gfull = gb.data() + plan.g0;  // G[0][0] of sample 0
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t c = task % g.C, nb = task / g.C, n0 = nb * plan.B;
      const int64_t m = std::min(plan.B, g.N - n0);
      for (int64_t b = 0; b < m; ++b)
        plan.plane_to_grid(d_out + ((n0 + b) * g.C + c) * P, gfull + b * S);
      if (dw) {  // dW[kh, kw] gets sum_J G[J] * tap_source[J]
        for (int64_t b = 0; b < m; ++b)
          plan.build_phases(x + ((n0 + b) * g.C + c) * HW, ph.data() + b * S, row_in.data());
        taps_dot(gfull, plan.grid_span(m), tap_src.data(), KK, partial + task * KK);
      }
      if (dx) {  // phase (r, q) gathers the taps with kh % s == r, kw % s == q
        const float* wc = w + c * KK;
        for (int64_t r = 0; r < plan.PR; ++r)
          for (int64_t q = 0; q < plan.PT; ++q) {
            int64_t count = 0;
            for (int64_t kh = r; kh < g.KH; kh += s)
              for (int64_t kw = q; kw < g.KW; kw += s) {
                src[count] = gfull - (kh / s) * Wq - kw / s;
                wt[count++] = wc[kh * g.KW + kw];
              }
            taps_sum(dph.data() + (r * plan.PT + q) * plan.phase_stride, plan.plane_span(m),
                     src.data(), wt.data(), count, 0.f);
          }
        for (int64_t b = 0; b < m; ++b) {
          float* plane = dx + ((n0 + b) * g.C + c) * HW;
          if (dx_fresh) std::fill(plane, plane + HW, 0.f);
          plan.add_unphased(dph.data() + b * S, plane, row_out.data());
        }
      }
    }
  });
  if (dw) {
    parallel_for(0, g.C * KK, std::max<int64_t>(1, 4096 / NB), [&](int64_t lo, int64_t hi) {
      for (int64_t ck = lo; ck < hi; ++ck) {
        double acc = 0.0;
        for (int64_t nb = 0; nb < NB; ++nb) acc += partial[nb * g.C * KK + ck];
        dw[ck] += static_cast<float>(acc);
      }
    });
  }
}

}  // namespace portable
}  // namespace spruce::ops::depthwise
