// Dense and grouped convs (and depthwise ones with a channel multiplier) as
// GEMMs (see conv2d_gemm.h): im2col (core/ops/im2col.h) over a chunk of nc
// samples, so each group is one GEMM with a wide N = nc * P
// (P = H_out * W_out):
//   forward   out_g  [OCg, nc*P]  = W_g [OCg, Kc] @ col_g [Kc, nc*P]
//   d_weight  dW_g   [OCg, Kc]   += dout_g [OCg, nc*P] @ col_g^T
//   d_input   stride 1, square kernel, padding < kernel: dx = conv(d_out,
//             flipped W^T), one im2col GEMM with K = OCg * KH * KW; otherwise
//             dcol_g [Kc, nc*P] = W_g^T @ dout_g, then col2im adds into dx
// A 1x1 stride-1 unpadded conv needs no im2col: when one sample already
// fills a GEMM, its input plane block is used in place. The GEMM route
// applies a fused output (ConvOutput) in its copy back to NCHW.
//
// Threads: called for a range of samples by one pool thread (conv2d.cpp
// gives each thread its own range), it lowers, multiplies with
// single-threaded OpenBLAS and copies back that range alone. Called with the
// whole batch from outside a parallel region (few samples, e.g. per-sample
// Fisher gradients), its copies run in parallel_for and each GEMM is split
// over the pool (core/ops/gemm.h). Every sum is owned by one task and runs
// in a fixed order.
#include "conv2d_gemm.h"

#include <algorithm>

#include "../parallel.h"
#include "gemm.h"
#include "scratch.h"

namespace spruce::ops::gemm_conv {
namespace {

// Per thread: each pool thread lowers its own samples into its own buffers.
Scratch& col_scratch() {  // im2col of x or of d_out, or dcol
  thread_local Scratch s;
  return s;
}
Scratch& out_scratch() {  // GEMM results and d_out in chunk layout [rows, nc * plane]
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
  // Rows of the biggest chunk buffer: im2col of x or of d_out (see backward).
  const int64_t rows = std::max(g.C, g.OC) * g.KH * g.KW;
  int64_t nc = std::clamp<int64_t>((kTargetCols + P - 1) / P, 1, count);
  nc = std::max<int64_t>(1, std::min(nc, kColBudget / (rows * P)));
  const int64_t chunks = (count + nc - 1) / nc;
  return (count + chunks - 1) / chunks;
}

/// Chunk layout [rows, nc * plane] <-> tensor layout [N, rows, plane] for the
/// samples [n0, n0 + nc): one task per (sample, row) strip of `plane` floats.
enum class Strip { kAssign, kAccumulate };

// The copies below run row by row of the chunk layout: a chunk row is one
// contiguous run of nc * plane floats, the tensor side nc strips of `plane`
// floats rows * plane apart. With MobileNet's 2x2 and 4x4 planes a strip is
// 4 or 16 floats, so the strip loop is inlined (no memcpy call per strip).

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
          o->finish_plane(r, s, d, o->residual ? o->residual + at : nullptr, plane);
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

}  // namespace

void forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
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
          o.finish_plane(oc, res + oc * P, res + oc * P, o.residual ? o.residual + at : nullptr, P);
        }
      });
    }
  }
}

/// Adds d_input (when dx) and d_weight (when dw, which receives this range's
/// sum over samples) for the samples [n_lo, n_hi).
void backward(const BackwardPlan& bp, int64_t n_lo, int64_t n_hi, float* dx, float* dw) {
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
        sgemm(false, false, Cg, tcols, tK, 1.f, bp.wt + gr * Cg * tK, tK, col + gr * tK * tcols,
              tcols, m == 1 ? beta : 0.f, res + gr * Cg * tcols, tcols);
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
      col2im_chunk(dcol, g, n0, m, bp.dx_fresh, dx);
    }
  }
}

ConvGeometry adjoint_geometry(const ConvGeometry& g) {
  ConvGeometry gt = g;
  gt.C = g.OC, gt.H = g.OH, gt.W = g.OW, gt.OC = g.C;
  gt.padding = g.KH - 1 - g.padding;
  gt.OH = g.H, gt.OW = g.W;
  return gt;
}

std::vector<float> adjoint_weight(const float* w, const ConvGeometry& g) {
  const int64_t Cg = g.Cg(), OCg = g.OCg(), KK = g.KH * g.KW;
  std::vector<float> wt(static_cast<size_t>(g.C * OCg * KK));
  for (int64_t gr = 0; gr < g.groups; ++gr)
    for (int64_t ci = 0; ci < Cg; ++ci)
      for (int64_t o = 0; o < OCg; ++o)
        for (int64_t k = 0; k < KK; ++k)
          wt[((gr * Cg + ci) * OCg + o) * KK + k] = w[((gr * OCg + o) * Cg + ci) * KK + KK - 1 - k];
  return wt;
}

}  // namespace spruce::ops::gemm_conv
