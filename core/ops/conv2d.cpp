// conv2d: the op. Checks shapes, picks a kernel for each direction and
// records the backward for autograd; the kernels live beside it:
//   depthwise convs (groups == C_in == C_out)   conv2d_depthwise.h
//   dense 3x3 stride-1 convs with AVX2 + FMA     conv2d_winograd.h
//   1x1 unpadded convs (forward), AVX2 + FMA     conv2d_pointwise.h
//   other one-group convs with AVX2 + FMA        conv2d_direct.h
//   everything else (and d_input of strides > 1) im2col + sgemm, conv2d_gemm.h
//
// Inference (conv2d_fused): every kernel writes its result through a
// ConvOutput (im2col.h), a per-channel scale and shift, a residual add and a
// ReLU applied as each value is written, so an eval-mode conv -> batch norm
// -> add -> relu writes its activation once instead of four times.
//
// Threads: with enough samples, each thread owns a contiguous range of them
// and runs the chosen kernel on that range alone, so a conv direction is one
// parallel region; d_weight is summed per range and the ranges are added in
// order. With few samples (per-sample Fisher gradients) there is one range
// and the kernels split their own work over the pool. Every sum is owned by
// one task and runs in a fixed order, so results depend only on the thread
// count, never on scheduling.
#include "conv2d.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "conv2d_depthwise.h"
#include "conv2d_direct.h"
#include "conv2d_gemm.h"
#include "conv2d_lanes.h"  // SPRUCE_DIRECT_CONV: the channel-lane kernels are built
#include "conv2d_pointwise.h"
#include "conv2d_winograd.h"
#include "grad_buffer.h"
#include "im2col.h"
#include "mac_counter.h"
#include "scratch.h"

namespace spruce::ops {
namespace {

// ---------------------------------------------------------------------------
// Shapes

ConvGeometry check_shapes(const Tensor& x, const Tensor& weight, const Tensor& bias,
                          const Conv2dOptions& o) {
  auto fail = [&](const std::string& what) {
    throw UsageError("conv2d: " + what + " (input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) + ", bias " +
                     (bias.defined() ? shape_str(bias.shape()) : "none") + ", stride " +
                     std::to_string(o.stride) + ", padding " + std::to_string(o.padding) +
                     ", groups " + std::to_string(o.groups) + ")");
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
// Dense convs: the choice of kernel and the split of samples over threads

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

Scratch& partial_scratch() {  // per-range d_weight partial sums (calling thread)
  thread_local Scratch s;
  return s;
}

/// out = conv(x, w) transformed by o for a conv with no depthwise kernel:
/// Winograd, the pointwise or direct kernel or the GEMM path, whichever
/// applies first.
/// `version` identifies w's contents, so kernels that pack w may keep the
/// packed copy between calls; null when w is being trained (it changes after
/// every step, a masked one is a fresh product each call: a kept copy would
/// only cost an allocation and cache space), so they pack into scratch.
void dense_forward(const float* x, const float* w, const ConvOutput& o, const ConvGeometry& g,
                   float* out, const ContentVersion* version) {
  if (winograd::supports(g)) {  // splits the samples over the threads itself
    winograd::forward(x, w, o, g, 0, g.N, out);
    return;
  }
  if (pointwise::supports(g)) {  // likewise
    pointwise::forward(x, w, o, g, out, pointwise::best_isa(), version);
    return;
  }
  const bool direct = direct::supports_forward(g);
  for_sample_ranges(g, [&](int64_t, int64_t lo, int64_t hi) {
    if (direct)
      direct::forward(x, w, o, g, lo, hi, out);
    else
      gemm_conv::forward(x, w, o, g, lo, hi, out);
  });
}

/// Adds d_input (when dx; assigns it when dx_fresh) and d_weight (when dw)
/// for a conv with no depthwise kernel, on the same kernels as
/// dense_forward. With several sample ranges, each range sums its d_weight
/// into its own slot and the slots are added to dw in range order
/// afterwards, so the result does not depend on scheduling.
void dense_backward(const float* d_out, const float* x, const float* w, const ConvGeometry& g,
                    float* dx, bool dx_fresh, float* dw) {
  gemm_conv::BackwardPlan bp;
  bp.d_out = d_out, bp.x = x, bp.w = w, bp.g = g, bp.dx_fresh = dx_fresh;
  const bool direct = direct::supports(g);
  bp.gt = gemm_conv::adjoint_geometry(g);
  const bool wino_dx = dx && direct && winograd::supports(bp.gt);
  const bool wino_dw = direct && winograd::supports(g);
  bp.transposed = !direct && dx && gemm_conv::transposed_input_grad(g);
  std::vector<float> wt;
  if (bp.transposed || wino_dx) {
    wt = gemm_conv::adjoint_weight(w, g);
    bp.wt = wt.data();
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
      gemm_conv::backward(bp, lo, hi, dx, dw_range);
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
    winograd::forward(d_out, bp.wt, add, bp.gt, 0, g.N, dx);
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

/// out = conv(x, weight) transformed by o, on the kernel that fits g.
Tensor forward(const Tensor& x, const Tensor& weight, const ConvGeometry& g, const ConvOutput& o) {
  count_macs(g.N * g.OC * g.P() * g.Kc());
  Tensor out = Tensor::empty({g.N, g.OC, g.OH, g.OW});
  if (out.numel() == 0) return out;
  if (depthwise::applies(g))
    depthwise::forward(x.data(), weight.data(), o, g, out.data());
  else {
    const ContentVersion version = weight.content_version();
    const bool trained = grad_mode_enabled() && weight.requires_grad();
    dense_forward(x.data(), weight.data(), o, g, out.data(), trained ? nullptr : &version);
  }
  return out;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  return conv2d(x, weight, bias, options, nullptr);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options, ChannelSums* sums) {
  const ConvGeometry g = check_shapes(x, weight, bias, options);
  const bool depthwise = depthwise::applies(g);
  ConvOutput o{.shift = bias.defined() ? bias.data() : nullptr};
  if (sums) {
    // Only the Winograd kernel takes the sums (dense_forward tries it first).
    sums->filled = !depthwise && winograd::supports(g) && g.N * g.P() > 0 &&
                   static_cast<int64_t>(sums->center.size()) == g.OC;
    if (sums->filled) {
      sums->s1.assign(static_cast<size_t>(g.N * g.OC), 0.0);
      sums->s2.assign(static_cast<size_t>(g.N * g.OC), 0.0);
      o.sums = sums;
    }
  }
  Tensor out = forward(x, weight, g, o);

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
           if (depthwise)
             depthwise::backward(d_out.data(), in[0].data(), in[1].data(), g, dx, dx_fresh, dw);
           else
             dense_backward(d_out.data(), in[0].data(), in[1].data(), g, dx, dx_fresh, dw);
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
    throw UsageError("conv2d_fused: " + what + " (input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) + ")");
  };
  for (const Tensor* t : {&scale, &shift})
    if (t->defined() && (t->dim() != 1 || t->size(0) != g.OC))
      fail("scale and shift must be [C_out], got " + shape_str(t->shape()));
  if (residual.defined() && residual.shape() != Shape{g.N, g.OC, g.OH, g.OW})
    fail("residual must be [N, C_out, H_out, W_out], got " + shape_str(residual.shape()));
  if (any_requires_grad({&x, &weight, &scale, &shift, &residual}))
    throw UsageError(
        "conv2d_fused: records no graph; call it under NoGradGuard or on tensors that need no "
        "gradient");
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data() : nullptr; };
  return forward(
      x, weight, g,
      {.scale = ptr(scale), .shift = ptr(shift), .residual = ptr(residual), .relu = epilogue.relu});
}

bool inference_split_invariant() {
#ifdef SPRUCE_DIRECT_CONV
  return true;
#else
  return false;
#endif
}

}  // namespace spruce::ops
