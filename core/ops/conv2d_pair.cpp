// Two 3x3 convs fused for inference (see conv2d_pair.h).
#include "conv2d_pair.h"

#include <atomic>

#include "../autograd.h"
#include "../parallel.h"
#include "conv2d_winograd.h"
#include "im2col.h"
#include "mac_counter.h"

namespace spruce::ops {
namespace {

bool is_vector(const Tensor& t, int64_t n) { return !t.defined() || t.shape() == Shape{n}; }

/// The two geometries when the pair can run fused; false sends it to the
/// two conv2d_fused calls (which also report any inconsistency).
bool fused_geometries(const Tensor& x, const Tensor& w1, const ConvEpilogue& e1, const Tensor& w2,
                      const ConvEpilogue& e2, ConvGeometry& g1, ConvGeometry& g2) {
  if (!x.defined() || !w1.defined() || !w2.defined()) return false;
  if (x.dim() != 4 || w1.dim() != 4 || w2.dim() != 4) return false;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t M = w1.size(0), OC = w2.size(0);
  if (w1.shape() != Shape{M, C, 3, 3} || w2.shape() != Shape{OC, M, 3, 3}) return false;
  if (!is_vector(e1.scale, M) || !is_vector(e1.shift, M) || e1.residual.defined()) return false;
  if (!is_vector(e2.scale, OC) || !is_vector(e2.shift, OC)) return false;
  if (e2.residual.defined() && e2.residual.shape() != Shape{N, OC, H, W}) return false;
  g1 = {.N = N, .C = C, .H = H, .W = W, .OC = M, .KH = 3, .KW = 3};
  g1.stride = 1, g1.padding = 1, g1.OH = H, g1.OW = W;
  g2 = g1;
  g2.C = M, g2.OC = OC;
  return winograd::supports(g1) && winograd::supports(g2);
}

std::atomic<int64_t> fused_runs{0};

}  // namespace

Tensor conv2d_pair_fused(const Tensor& x, const Tensor& w1, const ConvEpilogue& e1,
                         const Tensor& w2, const ConvEpilogue& e2) {
  const Conv2dOptions same{.stride = 1, .padding = 1};
  ConvGeometry g1, g2;
  if (!fused_geometries(x, w1, e1, w2, e2, g1, g2) ||
      any_requires_grad({&x, &w1, &w2, &e1.scale, &e1.shift, &e2.scale, &e2.shift, &e2.residual}) ||
      in_parallel_region())
    return conv2d_fused(conv2d_fused(x, w1, e1, same), w2, e2, same);

  fused_runs.fetch_add(1, std::memory_order_relaxed);
  count_macs(g1.N * g1.OC * g1.P() * g1.C * 9);
  count_macs(g2.N * g2.OC * g2.P() * g2.C * 9);
  Tensor out = Tensor::empty({g2.N, g2.OC, g2.OH, g2.OW});
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data() : nullptr; };
  const ConvOutput o1{.scale = ptr(e1.scale), .shift = ptr(e1.shift), .relu = e1.relu};
  const ConvOutput o2{.scale = ptr(e2.scale),
                      .shift = ptr(e2.shift),
                      .residual = ptr(e2.residual),
                      .relu = e2.relu};
  winograd::forward_pair(x.data(), w1.data(), o1, g1, w2.data(), o2, g2, out.data());
  return out;
}

int64_t conv2d_pair_fused_runs() { return fused_runs.load(std::memory_order_relaxed); }

}  // namespace spruce::ops
