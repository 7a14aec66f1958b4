// Pooling forward and backward. Every (n, c) plane is independent, so each
// direction runs in parallel over planes, and a plane's gradient is written
// by one thread in a fixed order (deterministic, no atomics). Windows are
// clipped to the image: padded cells never contribute a value, and for
// average pooling they only count in the divisor.
#include "pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;  // input elements per parallel chunk

/// Planes per parallel chunk so that a chunk holds about kGrain elements.
int64_t plane_grain(int64_t plane_size) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(plane_size, 1));
}

/// x [N, C, H, W] with the output extent of a pooling window.
struct PoolGeometry {
  int64_t planes, H, W, Ho, Wo, k, s, p;
  /// Window of output (oh, ow) clipped to the image: rows [h0, h1), cols [w0, w1).
  void window(int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) const {
    const int64_t hs = oh * s - p, ws = ow * s - p;
    h0 = std::max<int64_t>(hs, 0);
    h1 = std::min(hs + k, H);
    w0 = std::max<int64_t>(ws, 0);
    w1 = std::min(ws + k, W);
  }
};

PoolGeometry geometry(const char* op, const Tensor& x, const Pool2dOptions& o) {
  if (x.dim() != 4)
    throw UsageError(std::string(op) + ": input " + shape_str(x.shape()) +
                     ", expected [N, C, H, W]");
  if (o.kernel < 1 || o.stride < 1 || o.padding < 0 || 2 * o.padding > o.kernel)
    throw UsageError(std::string(op) + ": kernel " + std::to_string(o.kernel) + ", stride " +
                     std::to_string(o.stride) + ", padding " + std::to_string(o.padding) +
                     "; need kernel >= 1, stride >= 1 and 0 <= padding <= kernel / 2");
  const int64_t H = x.size(2), W = x.size(3);
  if (H < 1 || W < 1 || H + 2 * o.padding < o.kernel || W + 2 * o.padding < o.kernel)
    throw UsageError(std::string(op) + ": input " + shape_str(x.shape()) +
                     " is empty or smaller than the kernel " + std::to_string(o.kernel) +
                     " with padding " + std::to_string(o.padding));
  if (H * W > std::numeric_limits<int32_t>::max())
    throw UsageError(std::string(op) + ": plane of " + shape_str(x.shape()) +
                     " too large for 32-bit argmax indices");
  return {x.size(0) * x.size(1),
          H,
          W,
          (H + 2 * o.padding - o.kernel) / o.stride + 1,
          (W + 2 * o.padding - o.kernel) / o.stride + 1,
          o.kernel,
          o.stride,
          o.padding};
}
}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const PoolGeometry G = geometry("max_pool2d", x, options);
  Tensor out = Tensor::empty({x.size(0), x.size(1), G.Ho, G.Wo});
  // Argmax per output, as a flat index inside its input plane; only kept
  // when a backward will need it.
  std::shared_ptr<std::vector<int32_t>> argmax;
  if (any_requires_grad({&x}))
    argmax = std::make_shared<std::vector<int32_t>>(static_cast<size_t>(out.numel()));
  const float* px = x.data();
  float* po = out.data();
  int32_t* pi = argmax ? argmax->data() : nullptr;
  parallel_for(0, G.planes, plane_grain(G.H * G.W), [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const float* plane = px + q * G.H * G.W;
      const int64_t obase = q * G.Ho * G.Wo;
      for (int64_t oh = 0; oh < G.Ho; ++oh)
        for (int64_t ow = 0; ow < G.Wo; ++ow) {
          int64_t h0, h1, w0, w1;
          G.window(oh, ow, h0, h1, w0, w1);
          int64_t best_i = h0 * G.W + w0;
          float best = plane[best_i];
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              const float v = plane[h * G.W + w];
              // Strictly greater: the first maximum wins. A NaN propagates, as in PyTorch.
              if (v > best || (std::isnan(v) && !std::isnan(best))) {
                best = v;
                best_i = h * G.W + w;
              }
            }
          po[obase + oh * G.Wo + ow] = best;
          if (pi) pi[obase + oh * G.Wo + ow] = static_cast<int32_t>(best_i);
        }
    }
  });
  record(out, "max_pool2d", {x},
         [G, argmax](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           float* dx = in[0].grad_or_zeros().data();
           const float* g = d_out.data();
           const int32_t* pi = argmax->data();
           parallel_for(0, G.planes, plane_grain(G.H * G.W), [&](int64_t lo, int64_t hi) {
             for (int64_t q = lo; q < hi; ++q) {
               float* dplane = dx + q * G.H * G.W;
               for (int64_t o = q * G.Ho * G.Wo; o < (q + 1) * G.Ho * G.Wo; ++o)
                 dplane[pi[o]] += g[o];
             }
           });
         });
  return out;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const PoolGeometry G = geometry("avg_pool2d", x, options);
  Tensor out = Tensor::empty({x.size(0), x.size(1), G.Ho, G.Wo});
  // In floor mode a window never reaches past the padding, so with padded
  // cells counted the divisor is always the full kernel area.
  const float inv_area = 1.f / static_cast<float>(G.k * G.k);
  const float* px = x.data();
  float* po = out.data();
  parallel_for(0, G.planes, plane_grain(G.H * G.W), [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const float* plane = px + q * G.H * G.W;
      float* oplane = po + q * G.Ho * G.Wo;
      for (int64_t oh = 0; oh < G.Ho; ++oh)
        for (int64_t ow = 0; ow < G.Wo; ++ow) {
          int64_t h0, h1, w0, w1;
          G.window(oh, ow, h0, h1, w0, w1);
          float acc = 0.f;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc += plane[h * G.W + w];
          oplane[oh * G.Wo + ow] = acc * inv_area;
        }
    }
  });
  record(out, "avg_pool2d", {x},
         [G, inv_area](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           float* dx = in[0].grad_or_zeros().data();
           const float* g = d_out.data();
           parallel_for(0, G.planes, plane_grain(G.H * G.W), [&](int64_t lo, int64_t hi) {
             for (int64_t q = lo; q < hi; ++q) {
               float* dplane = dx + q * G.H * G.W;
               const float* gplane = g + q * G.Ho * G.Wo;
               for (int64_t oh = 0; oh < G.Ho; ++oh)
                 for (int64_t ow = 0; ow < G.Wo; ++ow) {
                   int64_t h0, h1, w0, w1;
                   G.window(oh, ow, h0, h1, w0, w1);
                   const float share = gplane[oh * G.Wo + ow] * inv_area;
                   for (int64_t h = h0; h < h1; ++h)
                     for (int64_t w = w0; w < w1; ++w) dplane[h * G.W + w] += share;
                 }
             }
           });
         });
  return out;
}

Tensor global_avg_pool2d(const Tensor& x) {
  if (x.dim() != 4)
    throw UsageError("global_avg_pool2d: input " + shape_str(x.shape()) +
                     ", expected [N, C, H, W]");
  const int64_t planes = x.size(0) * x.size(1), HW = x.size(2) * x.size(3);
  if (HW == 0) throw UsageError("global_avg_pool2d: empty plane in " + shape_str(x.shape()));
  Tensor out = Tensor::empty({x.size(0), x.size(1)});
  const float* px = x.data();
  float* po = out.data();
  parallel_for(0, planes, plane_grain(HW), [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      double acc = 0.0;
      const float* plane = px + q * HW;
      for (int64_t i = 0; i < HW; ++i) acc += plane[i];
      po[q] = static_cast<float>(acc / static_cast<double>(HW));
    }
  });
  record(out, "global_avg_pool2d", {x},
         [planes, HW](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           float* dx = in[0].grad_or_zeros().data();
           const float* g = d_out.data();
           const float inv = 1.f / static_cast<float>(HW);
           parallel_for(0, planes, plane_grain(HW), [&](int64_t lo, int64_t hi) {
             for (int64_t q = lo; q < hi; ++q) {
               const float share = g[q] * inv;
               float* dplane = dx + q * HW;
               for (int64_t i = 0; i < HW; ++i) dplane[i] += share;
             }
           });
         });
  return out;
}

}  // namespace spruce::ops
