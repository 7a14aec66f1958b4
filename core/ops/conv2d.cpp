// conv2d: forward and backward of a 2-D cross-correlation with stride, zero
// padding and groups, on two kernels.
//
// Dense and grouped convs (and depthwise ones with a channel multiplier) are
// lowered with im2col (core/ops/im2col.h) over a chunk of nc samples, so each
// group is one GEMM with a wide N = nc * P (P = H_out * W_out):
//   forward   out_g  [OCg, nc*P]  = W_g [OCg, Kc] @ col_g [Kc, nc*P]
//   d_weight  dW_g   [OCg, Kc]   += dout_g [OCg, nc*P] @ col_g^T
//   d_input   stride 1, square kernel, padding < kernel: dx = conv(d_out,
//             flipped W^T), one im2col GEMM with K = OCg * KH * KW; otherwise
//             dcol_g [Kc, nc*P] = W_g^T @ dout_g, then col2im adds into dx
// A 1x1 stride-1 unpadded conv needs no im2col: when one sample already
// fills a GEMM, its input plane block is used in place.
// With AVX2 + FMA, core/ops/conv2d_direct.h replaces this lowering where it
// applies: the forward of every one-group conv (any stride; 1x1 on planes of
// 32+ pixels), and d_input / d_weight of stride-1 convs with kernels > 1x1.
//
// Depthwise convs (groups == C_in == C_out) run a direct kernel. Each input
// plane is zero-padded and split into stride x stride "phase" planes
//   phase[r][t][i][j] = x_padded[i * stride + r][j * stride + t],
// so every kernel tap reads one phase plane at a constant offset, whatever
// the stride. Outputs are computed on a grid of row length Wq (the phase
// width; columns >= W_out are discarded), so a tap is one long contiguous
// loop, fused over all taps, that g++ -O3 vectorises however narrow the image
// is; a block of samples of one channel shares each loop, which keeps 2x2 and
// 4x4 planes from being all loop overhead. The input gradient is the same
// kernel in gather form over a zero-framed copy of the output gradient, and
// the weight gradient is one dot product per tap.
//
// Inference (conv2d_fused): every kernel writes its result through a
// ConvOutput (im2col.h), a per-channel scale and shift, a residual add and a
// ReLU applied as each value is written, so an eval-mode conv -> batch norm
// -> add -> relu writes its activation once instead of four times. The direct
// kernels fold the scale into their packed weights and start from the shift;
// the GEMM route applies both in its copy back to NCHW; the portable
// depthwise kernel finishes each plane after it.
//
// Threads: with enough samples, each thread owns a contiguous range of them
// and runs im2col, its GEMMs (single-threaded OpenBLAS) and the layout copies
// for that range alone, so a conv direction is one parallel region; d_weight
// is summed per range and the ranges are added in order. With few samples
// (per-sample Fisher gradients) the copies run in parallel_for and each GEMM
// is split over the pool (core/ops/gemm.h). Every sum is owned by one task and
// runs in a fixed order, so results depend only on the thread count, never
// on scheduling.
#include "conv2d.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../autograd.h"
#include "conv2d_direct.h"
#include "conv2d_winograd.h"
#include "gemm.h"
#include "grad_buffer.h"
#include "im2col.h"
#include "mac_counter.h"
#include "../parallel.h"

namespace spruce::ops {
namespace {

// ---------------------------------------------------------------------------
// Shapes

ConvGeometry check_shapes(const Tensor& x, const Tensor& weight, const Tensor& bias,
                          const Conv2dOptions& o) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("conv2d: " + what + " (input " + shape_str(x.shape()) +
                                ", weight " + shape_str(weight.shape()) + ", bias " +
                                (bias.defined() ? shape_str(bias.shape()) : "none") + ", stride " +
                                std::to_string(o.stride) + ", padding " +
                                std::to_string(o.padding) + ", groups " + std::to_string(o.groups) +
                                ")");
  };
  if (!x.defined() || !weight.defined()) fail("input and weight must be defined");
  if (x.dim() != 4) fail("input must be [N, C, H, W]");
  if (weight.dim() != 4) fail("weight must be [C_out, C_in / groups, KH, KW]");
  if (o.stride < 1) fail("stride must be >= 1");
  if (o.padding < 0) fail("padding must be >= 0");
  if (o.groups < 1) fail("groups must be >= 1");
  ConvGeometry g;
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.OC = weight.size(0), g.KH = weight.size(2), g.KW = weight.size(3);
  g.stride = o.stride, g.padding = o.padding, g.groups = o.groups;
  if (g.C % g.groups != 0 || g.OC % g.groups != 0)
    fail("C_in and C_out must be divisible by groups");
  if (weight.size(1) * g.groups != g.C) fail("weight dim 1 must be C_in / groups");
  if (g.KH < 1 || g.KW < 1 || g.OC < 1) fail("empty kernel");
  if (g.H + 2 * g.padding < g.KH || g.W + 2 * g.padding < g.KW)
    fail("kernel larger than the padded input");
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != g.OC)) fail("bias must be [C_out]");
  g.OH = (g.H + 2 * g.padding - g.KH) / g.stride + 1;
  g.OW = (g.W + 2 * g.padding - g.KW) / g.stride + 1;
  return g;
}

bool is_depthwise(const ConvGeometry& g) { return g.groups == g.C && g.OC == g.C && g.C > 1; }

/// 1x1, stride 1, no padding: the input plane block is already the column matrix.
bool is_pointwise(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride == 1 && g.padding == 0;
}

/// Sum of n floats in a fixed order, with 16 independent partial sums so the
/// loop vectorises (a plain serial sum would not: float adds do not reassociate).
float lane_sum(const float* a, int64_t n) {
  float acc[16] = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[j + l];
  float s = 0.f;
  for (; j < n; ++j) s += a[j];
  for (float v : acc) s += v;
  return s;
}

/// d_bias[o] += sum over n and pixels of d_out[n, o, :, :]; one task per channel.
void bias_backward(const float* d_out, const ConvGeometry& g, float* d_bias) {
  const int64_t P = g.P();
  parallel_for(0, g.OC, std::max<int64_t>(1, 16384 / (g.N * P)), [&](int64_t lo, int64_t hi) {
    for (int64_t o = lo; o < hi; ++o) {
      double acc = 0.0;
      for (int64_t n = 0; n < g.N; ++n) acc += lane_sum(d_out + (n * g.OC + o) * P, P);
      d_bias[o] += static_cast<float>(acc);
    }
  });
}

// ---------------------------------------------------------------------------
// Dense and grouped convs: im2col + sgemm over chunks of samples

/// A grow-only, 64-byte aligned buffer: the big im2col scratch is reused from
/// call to call instead of being reallocated for every layer.
class Scratch {
 public:
  float* get(int64_t n) {
    if (!buffer_ || buffer_->size() < n) buffer_ = std::make_unique<Storage>(n);
    return buffer_->data();
  }

 private:
  std::unique_ptr<Storage> buffer_;
};

// Per thread: each pool thread lowers its own samples into its own buffers.
Scratch& col_scratch() {  // im2col of x or of d_out, or dcol
  thread_local Scratch s;
  return s;
}
Scratch& out_scratch() {  // GEMM results and d_out in chunk layout [rows, nc * plane]
  thread_local Scratch s;
  return s;
}
Scratch& partial_scratch() {  // per-range d_weight partial sums (calling thread)
  thread_local Scratch s;
  return s;
}

// A GEMM runs well from about this many columns (N = nc * P); a sample with
// at least kDirectCols output pixels is a GEMM of its own, written straight
// into the output without the chunk layout's gather and scatter. Chunks stay
// small enough (kColBudget) for one thread's column buffer to stay in cache.
constexpr int64_t kTargetCols = 2048;
constexpr int64_t kDirectCols = 512;
constexpr int64_t kColBudget = int64_t{1} << 20;  // floats (4 MB)

/// Samples per chunk for a range of `count` samples: wide enough for an
/// efficient GEMM, bounded by the scratch budget, balanced so all chunks
/// have (nearly) the same size.
int64_t chunk_samples(const ConvGeometry& g, int64_t count) {
  const int64_t P = g.P();
  if (P >= kDirectCols) return 1;
  // Rows of the biggest chunk buffer: im2col of x or of d_out (see backward_range).
  const int64_t rows = std::max(g.C, g.OC) * g.KH * g.KW;
  int64_t nc = std::clamp<int64_t>((kTargetCols + P - 1) / P, 1, count);
  nc = std::max<int64_t>(1, std::min(nc, kColBudget / (rows * P)));
  const int64_t chunks = (count + nc - 1) / nc;
  return (count + chunks - 1) / chunks;
}

/// How many contiguous sample ranges run side by side, one per thread. Each
/// thread lowers, multiplies (single-threaded OpenBLAS) and copies back its
/// own samples: one parallel region per conv direction, and a thread reads
/// what it has just written while it is still in its cache. With too few
/// samples to share out evenly there is one range, whose copies run in
/// parallel_for and whose GEMMs are split over the pool by ops::sgemm.
int64_t sample_ranges(const ConvGeometry& g) {
  const int64_t t = num_threads();
  return t > 1 && (g.N % t == 0 || g.N >= 4 * t) ? t : 1;
}

/// Calls fn(r, lo, hi) for the sample ranges, in parallel when there are several.
template <class Fn>
void for_sample_ranges(const ConvGeometry& g, const Fn& fn) {
  const int64_t parts = sample_ranges(g);
  if (parts == 1) {
    fn(int64_t{0}, int64_t{0}, g.N);
    return;
  }
  parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) fn(p, p * g.N / parts, (p + 1) * g.N / parts);
  });
}

/// Chunk layout [rows, nc * plane] <-> tensor layout [N, rows, plane] for the
/// samples [n0, n0 + nc): one task per (sample, row) strip of `plane` floats.
enum class Strip { kAssign, kAccumulate };

// The copies below run row by row of the chunk layout: a chunk row is one
// contiguous run of nc * plane floats, the tensor side nc strips of `plane`
// floats rows * plane apart. With MobileNet's 2x2 and 4x4 planes a strip is
// 4 or 16 floats, so the strip loop is inlined (no memcpy call per strip).

/// d[p] = the output transform o of channel r applied to s[p], p < len,
/// with the residual res[p]: s[p] + shift[r] for a plain conv (a bias), else
/// o.finish(scale[r] s[p] + shift[r]). s may be d (in place).
void finish_strip(const ConvOutput& o, int64_t r, const float* s, float* d, const float* res,
                  int64_t len) {
  const float b = o.shift ? o.shift[r] : 0.f;
  if (!o.fused()) {
    for (int64_t p = 0; p < len; ++p) d[p] = s[p] + b;
    return;
  }
  const float a = o.scale ? o.scale[r] : 1.f;
  for (int64_t p = 0; p < len; ++p) d[p] = o.finish(s[p] * a + b, res, p);
}

/// dst[n0 + n, r, :] (+)= buf[r, n * plane : (n + 1) * plane]; assigned
/// strips are transformed by o (null: copied as they are).
void chunk_to_tensor(const float* buf, const ConvOutput* o, int64_t rows, int64_t plane, int64_t n0,
                     int64_t nc, Strip mode, float* dst) {
  const int64_t cols = nc * plane, stride = rows * plane;
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      for (int64_t n = 0; n < nc; ++n) {
        const int64_t at = (n0 + n) * stride + r * plane;
        const float* __restrict s = buf + r * cols + n * plane;
        float* __restrict d = dst + at;
        if (mode == Strip::kAccumulate) {
          for (int64_t p = 0; p < plane; ++p) d[p] += s[p];
        } else if (o) {
          finish_strip(*o, r, s, d, o->residual ? o->residual + at : nullptr, plane);
        } else {
          for (int64_t p = 0; p < plane; ++p) d[p] = s[p];
        }
      }
    }
  });
}

/// buf[r, n * plane : (n + 1) * plane] = src[n0 + n, r, :].
void tensor_to_chunk(const float* src, int64_t rows, int64_t plane, int64_t n0, int64_t nc,
                     float* buf) {
  const int64_t cols = nc * plane, stride = rows * plane;
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t n = 0; n < nc; ++n) {
        const float* __restrict s = src + (n0 + n) * stride + r * plane;
        float* __restrict d = buf + r * cols + n * plane;
        for (int64_t p = 0; p < plane; ++p) d[p] = s[p];
      }
  });
}

/// The column matrix of a chunk: im2col, or for a 1x1 stride-1 unpadded conv
/// the input itself in chunk layout.
void lower_chunk(const float* x, const ConvGeometry& g, int64_t n0, int64_t m, float* col) {
  if (is_pointwise(g))
    tensor_to_chunk(x, g.C, g.P(), n0, m, col);
  else
    im2col_chunk(x, g, n0, m, col);
}

/// out[n] = W * im2col(x[n]), transformed by o, for the samples [n_lo, n_hi).
void forward_range(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                   int64_t n_lo, int64_t n_hi, float* out) {
  const int64_t P = g.P(), OCg = g.OCg(), Kc = g.Kc();
  const int64_t nc = chunk_samples(g, n_hi - n_lo);
  const bool pointwise = is_pointwise(g);
  for (int64_t n0 = n_lo; n0 < n_hi; n0 += nc) {
    const int64_t m = std::min(nc, n_hi - n0), cols = m * P;
    // One sample writes its GEMM result straight into out (rows of P); more
    // need a [OC, cols] buffer and a scatter.
    const float* col;
    if (pointwise && m == 1) {
      col = x + n0 * g.C * P;
    } else {
      float* c = col_scratch().get(g.C * g.KH * g.KW * cols);
      lower_chunk(x, g, n0, m, c);
      col = c;
    }
    float* res = m == 1 ? out + n0 * g.OC * P : out_scratch().get(g.OC * cols);
    for (int64_t gr = 0; gr < g.groups; ++gr)  // res_g [OCg, cols] = W_g [OCg, Kc] @ col_g
      sgemm(false, false, OCg, cols, Kc, 1.f, w + gr * OCg * Kc, Kc, col + gr * Kc * cols, cols,
            0.f, res + gr * OCg * cols, cols);
    if (m > 1) {
      chunk_to_tensor(res, &o, g.OC, P, n0, m, Strip::kAssign, out);
    } else if (o.shift || o.fused()) {
      parallel_for(0, g.OC, std::max<int64_t>(1, 8192 / P), [&](int64_t lo, int64_t hi) {
        for (int64_t oc = lo; oc < hi; ++oc) {
          const int64_t at = (n0 * g.OC + oc) * P;
          finish_strip(o, oc, res + oc * P, res + oc * P, o.residual ? o.residual + at : nullptr,
                       P);
        }
      });
    }
  }
}

void gemm_forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                  float* out) {
  if (winograd::supports(g)) {  // splits the samples over the threads itself
    winograd::forward(x, w, o, g, 0, g.N, out);
    return;
  }
  const bool direct = direct::supports_forward(g);
  for_sample_ranges(g, [&](int64_t, int64_t lo, int64_t hi) {
    if (direct)
      direct::forward(x, w, o, g, lo, hi, out);
    else
      forward_range(x, w, o, g, lo, hi, out);
  });
}

/// A stride-1 conv with a square kernel and padding < kernel has d_input =
/// conv(d_out, flipped and transposed weight, padding K - 1 - padding): an
/// im2col GEMM with K = C_out * KH * KW, instead of the col2im route whose
/// GEMM has K = C_out / groups (thin, memory-bound) and writes a column
/// matrix KH * KW times larger than dx.
bool transposed_input_grad(const ConvGeometry& g) {
  return g.stride == 1 && g.KH == g.KW && g.padding < g.KH && !is_pointwise(g);
}

/// What the backward of one conv needs, shared by its sample ranges.
struct BackwardPlan {
  const float* d_out = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  ConvGeometry g;
  bool transposed = false;
  bool dx_fresh = false;  // dx is uninitialised: assign instead of adding
  ConvGeometry gt;        // the conv mapping d_out to dx (transposed route)
  std::vector<float> wt;  // its weight, wt_g [Cg, OCg * KK]
};

/// Adds d_input (when dx) and d_weight (when dw, which receives this range's
/// sum over samples) for the samples [n_lo, n_hi).
void backward_range(const BackwardPlan& bp, int64_t n_lo, int64_t n_hi, float* dx, float* dw) {
  const ConvGeometry& g = bp.g;
  const float* d_out = bp.d_out;
  const float* x = bp.x;
  const float* w = bp.w;
  const int64_t P = g.P(), HW = g.H * g.W, OCg = g.OCg(), Kc = g.Kc(), Cg = g.Cg();
  const int64_t KK = g.KH * g.KW;
  const int64_t nc = chunk_samples(g, n_hi - n_lo);
  const bool pointwise = is_pointwise(g);

  for (int64_t n0 = n_lo; n0 < n_hi; n0 += nc) {
    const int64_t m = std::min(nc, n_hi - n0), cols = m * P;
    // d_out of the chunk as [OC, cols]: as is for one sample, else gathered.
    const float* gout = nullptr;
    auto chunk_grad = [&] {
      if (gout) return;
      if (m == 1) {
        gout = d_out + n0 * g.OC * P;
      } else {
        float* buf = out_scratch().get(g.OC * cols);
        tensor_to_chunk(d_out, g.OC, P, n0, m, buf);
        gout = buf;
      }
    };
    if (dw) {
      chunk_grad();
      const float* col;
      if (pointwise && m == 1) {
        col = x + n0 * g.C * P;
      } else {
        float* c = col_scratch().get(g.C * KK * cols);
        lower_chunk(x, g, n0, m, c);
        col = c;
      }
      for (int64_t gr = 0; gr < g.groups; ++gr)  // dW_g [OCg, Kc] += dout_g @ col_g^T
        sgemm(false, true, OCg, Kc, cols, 1.f, gout + gr * OCg * cols, cols, col + gr * Kc * cols,
              cols, 1.f, dw + gr * OCg * Kc, Kc);
    }
    if (!dx) continue;
    // A fresh dx is assigned: GEMMs with beta 0, copies in kAssign mode.
    const float beta = bp.dx_fresh ? 0.f : 1.f;
    const Strip mode = bp.dx_fresh ? Strip::kAssign : Strip::kAccumulate;
    // The column buffer is free again below: d_weight is done with it.
    if (bp.transposed) {
      const int64_t tcols = m * HW, tK = OCg * KK;
      float* col = col_scratch().get(g.OC * KK * tcols);
      im2col_chunk(d_out, bp.gt, n0, m, col);  // [OC * KK, m * H * W]
      // One sample goes straight into dx; more go through a buffer.
      // (The buffer may reuse out_scratch: d_weight is done with gout.)
      float* res = m == 1 ? dx + n0 * g.C * HW : out_scratch().get(g.C * tcols);
      for (int64_t gr = 0; gr < g.groups; ++gr)  // dx_g [Cg, tcols] (+)= wt_g @ col_g
        sgemm(false, false, Cg, tcols, tK, 1.f, bp.wt.data() + gr * Cg * tK, tK,
              col + gr * tK * tcols, tcols, m == 1 ? beta : 0.f, res + gr * Cg * tcols, tcols);
      if (m > 1) chunk_to_tensor(res, nullptr, g.C, HW, n0, m, mode, dx);
    } else if (pointwise) {
      // dx_g [Cg, cols] (+)= W_g^T @ dout_g: straight into dx for one sample,
      // else through a buffer in chunk layout.
      chunk_grad();
      float* res = m == 1 ? dx + n0 * g.C * P : col_scratch().get(g.C * cols);
      for (int64_t gr = 0; gr < g.groups; ++gr)
        sgemm(true, false, Cg, cols, OCg, 1.f, w + gr * OCg * Kc, Kc, gout + gr * OCg * cols, cols,
              m == 1 ? beta : 0.f, res + gr * Cg * cols, cols);
      if (m > 1) chunk_to_tensor(res, nullptr, g.C, P, n0, m, mode, dx);
    } else {
      chunk_grad();
      float* dcol = col_scratch().get(g.C * KK * cols);
      for (int64_t gr = 0; gr < g.groups; ++gr)  // dcol_g [Kc, cols] = W_g^T @ dout_g
        sgemm(true, false, Kc, cols, OCg, 1.f, w + gr * OCg * Kc, Kc, gout + gr * OCg * cols, cols,
              0.f, dcol + gr * Kc * cols, cols);
      // col2im adds: a fresh dx is zeroed first, chunk by chunk.
      if (bp.dx_fresh) std::fill(dx + n0 * g.C * HW, dx + (n0 + m) * g.C * HW, 0.f);
      col2im_chunk(dcol, g, n0, m, dx);
    }
  }
}

/// Adds d_input (when dx; assigns it when dx_fresh) and d_weight (when dw)
/// for the GEMM path. With several sample ranges, each range sums its
/// d_weight into its own slot and the slots are added to dw in range order
/// afterwards, so the result does not depend on scheduling.
void gemm_backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g,
                   float* dx, bool dx_fresh, float* dw) {
  const int64_t Cg = g.Cg(), OCg = g.OCg(), KK = g.KH * g.KW;
  BackwardPlan bp;
  bp.d_out = d_out, bp.x = x, bp.w = w, bp.g = g, bp.dx_fresh = dx_fresh;
  const bool direct = direct::supports(g);
  // The conv mapping d_out to dx (stride 1, square kernel): d_out correlated
  // with the flipped, transposed weight, padding K - 1 - padding.
  ConvGeometry& gt = bp.gt;
  gt = g;
  gt.C = g.OC, gt.H = g.OH, gt.W = g.OW, gt.OC = g.C;
  gt.padding = g.KH - 1 - g.padding;
  gt.OH = g.H, gt.OW = g.W;
  const bool wino_dx = dx && direct && winograd::supports(gt);
  const bool wino_dw = direct && winograd::supports(g);
  bp.transposed = !direct && dx && transposed_input_grad(g);
  if (bp.transposed || wino_dx) {
    // wt_g[ci, (o, kh, kw)] = W[g * OCg + o, ci, K-1-kh, K-1-kw]
    bp.wt.resize(static_cast<size_t>(g.C * OCg * KK));
    for (int64_t gr = 0; gr < g.groups; ++gr)
      for (int64_t ci = 0; ci < Cg; ++ci)
        for (int64_t o = 0; o < OCg; ++o)
          for (int64_t k = 0; k < KK; ++k)
            bp.wt[((gr * Cg + ci) * OCg + o) * KK + k] =
                w[((gr * OCg + o) * Cg + ci) * KK + KK - 1 - k];
  }
  const int64_t parts = sample_ranges(g), wsize = g.OC * g.Kc();
  float* partial = nullptr;  // [parts, OC * Kc]
  if (dw && parts > 1) {
    partial = partial_scratch().get(parts * wsize);
    std::fill(partial, partial + parts * wsize, 0.f);
  }
  for_sample_ranges(g, [&](int64_t r, int64_t lo, int64_t hi) {
    float* dw_range = partial ? partial + r * wsize : dw;
    if (!direct) {
      backward_range(bp, lo, hi, dx, dw_range);
      return;
    }
    if (dw_range && wino_dw)
      winograd::weight_grad(d_out, x, g, lo, hi, dw_range);
    else if (dw_range)
      direct::weight_grad(d_out, x, g, lo, hi, dw_range);
    if (dx && !wino_dx) direct::input_grad(d_out, w, g, lo, hi, dx_fresh, dx);
  });
  if (wino_dx) {  // over all samples at once; added as the conv's residual when dx holds a gradient
    ConvOutput add;
    if (!dx_fresh) add.residual = dx;
    winograd::forward(d_out, bp.wt.data(), add, gt, 0, g.N, dx);
  }
  if (partial) {
    parallel_for(0, wsize, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float s = partial[i];
        for (int64_t r = 1; r < parts; ++r) s += partial[r * wsize + i];
        dw[i] += s;
      }
    });
  }
}

// ---------------------------------------------------------------------------
// Depthwise convs: direct kernel on phase planes

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

void depthwise_forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
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
              finish_strip(o, c, out + at, out + at, o.residual ? o.residual + at : nullptr, P);
          }
        }
      });
}

Scratch& depthwise_scratch() {  // per-block d_weight partial sums
  thread_local Scratch s;
  return s;
}

/// Adds d_input (when dx; assigns it when dx_fresh) and d_weight (when dw).
/// Each (block, channel) task
/// writes its d_weight contribution to its own slot; the slots are summed
/// over blocks afterwards in a fixed order, so the result does not depend on
/// the thread count.
void depthwise_backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g,
                        float* dx, bool dx_fresh, float* dw) {
  const DepthwisePlan plan(g);
  const int64_t HW = g.H * g.W, P = g.P(), Wq = plan.Wq, S = plan.S, s = plan.s;
  const int64_t KK = plan.taps, NB = plan.blocks();
  float* partial = dw ? depthwise_scratch().get(NB * g.C * KK) : nullptr;  // [NB, C, KK]
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

/// out = conv(x, weight) transformed by o, on the kernel that fits g.
Tensor forward(const Tensor& x, const Tensor& weight, const ConvGeometry& g, const ConvOutput& o) {
  count_macs(g.N * g.OC * g.P() * g.Kc());
  Tensor out = Tensor::empty({g.N, g.OC, g.OH, g.OW});
  if (out.numel() == 0) return out;
  if (is_depthwise(g) && direct::supports_depthwise(g))
    direct::depthwise_forward(x.data(), weight.data(), o, g, out.data());
  else if (is_depthwise(g))
    depthwise_forward(x.data(), weight.data(), o, g, out.data());
  else
    gemm_forward(x.data(), weight.data(), o, g, out.data());
  return out;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  const ConvGeometry g = check_shapes(x, weight, bias, options);
  const bool depthwise = is_depthwise(g);
  Tensor out = forward(x, weight, g, {.shift = bias.defined() ? bias.data() : nullptr});

  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  record(out, "conv2d", std::move(inputs),
         [g, depthwise](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           bool dx_fresh = false;
           float* dx = in[0].requires_grad() ? grad_for_write(in[0], dx_fresh) : nullptr;
           float* dw = in[1].requires_grad() ? in[1].grad_or_zeros().data() : nullptr;
           float* db =
               in.size() > 2 && in[2].requires_grad() ? in[2].grad_or_zeros().data() : nullptr;
           if (d_out.numel() == 0) {  // no samples: nothing to add, a fresh dx is empty
             if (dx_fresh) std::fill(dx, dx + in[0].numel(), 0.f);
             return;
           }
           if (db) bias_backward(d_out.data(), g, db);
           if (!dx && !dw) return;
           if (depthwise && direct::supports_depthwise(g))
             direct::depthwise_backward(d_out.data(), in[0].data(), in[1].data(), g, dx, dx_fresh,
                                        dw);
           else if (depthwise)
             depthwise_backward(d_out.data(), in[0].data(), in[1].data(), g, dx, dx_fresh, dw);
           else
             gemm_backward(d_out.data(), in[0].data(), in[1].data(), g, dx, dx_fresh, dw);
         });
  return out;
}

Tensor conv2d_fused(const Tensor& x, const Tensor& weight, const ConvEpilogue& epilogue,
                    const Conv2dOptions& options) {
  const ConvGeometry g = check_shapes(x, weight, Tensor(), options);
  const Tensor& scale = epilogue.scale;
  const Tensor& shift = epilogue.shift;
  const Tensor& residual = epilogue.residual;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument("conv2d_fused: " + what + " (input " + shape_str(x.shape()) +
                                ", weight " + shape_str(weight.shape()) + ")");
  };
  for (const Tensor* t : {&scale, &shift})
    if (t->defined() && (t->dim() != 1 || t->size(0) != g.OC))
      fail("scale and shift must be [C_out], got " + shape_str(t->shape()));
  if (residual.defined() && residual.shape() != Shape{g.N, g.OC, g.OH, g.OW})
    fail("residual must be [N, C_out, H_out, W_out], got " + shape_str(residual.shape()));
  if (any_requires_grad({&x, &weight, &scale, &shift, &residual}))
    throw std::logic_error(
        "conv2d_fused: records no graph; call it under NoGradGuard or on tensors that need no "
        "gradient");
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data() : nullptr; };
  return forward(
      x, weight, g,
      {.scale = ptr(scale), .shift = ptr(shift), .residual = ptr(residual), .relu = epilogue.relu});
}

}  // namespace spruce::ops
