// The fused depthwise-separable pair (see conv2d_separable.h).
//
// Chunks: enough samples that a chunk's depthwise output is about
// kChunkFloats (L2-sized, with room for the 1x1 conv's packed weights and
// column panels), and at least the 1x1 weight's size, since each chunk
// reads the packed weights once more: a pair whose weights are large beside
// its activations (MobileNetV1's 2x2 blocks) would re-read more than it
// saves, and runs as the two calls.
#include "conv2d_separable.h"

#include <algorithm>
#include <atomic>

#include "../autograd.h"
#include "../parallel.h"
#include "conv2d_depthwise.h"
#include "conv2d_pointwise.h"
#include "im2col.h"
#include "mac_counter.h"
#include "scratch.h"

namespace spruce::ops {
namespace {

constexpr int64_t kChunkFloats = 64 * 1024;      // 256 KB of depthwise output
constexpr int64_t kMaxChunkFloats = 256 * 1024;  // 1 MB: beyond, no reuse is left

bool is_vector(const Tensor& t, int64_t n) { return !t.defined() || t.shape() == Shape{n}; }

/// The two geometries when the pair can run fused; false sends it to the
/// two conv2d_fused calls (which also report any inconsistency).
bool fused_geometries(const Tensor& x, const Tensor& dw_weight, const ConvEpilogue& dw_ep,
                      const Conv2dOptions& o, const Tensor& pw_weight, const ConvEpilogue& pw_ep,
                      ConvGeometry& gd, ConvGeometry& gp) {
  if (!x.defined() || !dw_weight.defined() || !pw_weight.defined()) return false;
  if (x.dim() != 4 || dw_weight.dim() != 4 || pw_weight.dim() != 4) return false;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = dw_weight.size(2);
  if (C < 2 || o.groups != C || o.stride < 1 || o.padding < 0) return false;
  if (dw_weight.shape() != Shape{C, 1, K, dw_weight.size(3)} || dw_weight.size(3) != K)
    return false;
  if (H + 2 * o.padding < K || W + 2 * o.padding < K) return false;
  const int64_t OC = pw_weight.size(0);
  if (OC < 1 || pw_weight.shape() != Shape{OC, C, 1, 1}) return false;
  const int64_t OH = (H + 2 * o.padding - K) / o.stride + 1;
  const int64_t OW = (W + 2 * o.padding - K) / o.stride + 1;
  if (!is_vector(dw_ep.scale, C) || !is_vector(dw_ep.shift, C) || dw_ep.residual.defined())
    return false;
  if (!is_vector(pw_ep.scale, OC) || !is_vector(pw_ep.shift, OC)) return false;
  if (pw_ep.residual.defined() && pw_ep.residual.shape() != Shape{N, OC, OH, OW}) return false;
  gd = {.N = N, .C = C, .H = H, .W = W, .OC = C, .KH = K, .KW = K};
  gd.stride = o.stride, gd.padding = o.padding, gd.groups = C, gd.OH = OH, gd.OW = OW;
  gp = {.N = N, .C = C, .H = OH, .W = OW, .OC = OC, .KH = 1, .KW = 1};
  gp.OH = OH, gp.OW = OW;
  return depthwise::applies(gd) && pointwise::supports(gp);
}

std::atomic<int64_t> fused_runs{0};

Scratch& chunk_scratch() {  // a chunk's depthwise output (each thread its own)
  thread_local Scratch s;
  return s;
}

}  // namespace

Tensor separable_conv2d_fused(const Tensor& x, const Tensor& dw_weight,
                              const ConvEpilogue& dw_epilogue, const Conv2dOptions& dw_options,
                              const Tensor& pw_weight, const ConvEpilogue& pw_epilogue) {
  auto unfused = [&] {
    return conv2d_fused(conv2d_fused(x, dw_weight, dw_epilogue, dw_options), pw_weight,
                        pw_epilogue);
  };
  ConvGeometry gd, gp;
  if (!fused_geometries(x, dw_weight, dw_epilogue, dw_options, pw_weight, pw_epilogue, gd, gp) ||
      any_requires_grad({&x, &dw_weight, &pw_weight, &dw_epilogue.scale, &dw_epilogue.shift,
                         &pw_epilogue.scale, &pw_epilogue.shift, &pw_epilogue.residual}) ||
      in_parallel_region())
    return unfused();
  const int64_t threads = num_threads(), per_sample = gp.C * gp.H * gp.W;
  const int64_t chunk = std::max<int64_t>(1, std::max(kChunkFloats, gp.OC * gp.C) / per_sample);
  if (chunk * per_sample > kMaxChunkFloats || gd.N < 2 * threads * chunk) return unfused();

  fused_runs.fetch_add(1, std::memory_order_relaxed);
  count_macs(gd.N * gd.C * gd.P() * gd.KH * gd.KW);
  count_macs(gp.N * gp.OC * gp.P() * gp.C);
  Tensor out = Tensor::empty({gp.N, gp.OC, gp.OH, gp.OW});
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data() : nullptr; };
  const ConvOutput od{
      .scale = ptr(dw_epilogue.scale), .shift = ptr(dw_epilogue.shift), .relu = dw_epilogue.relu};
  const ConvOutput op{.scale = ptr(pw_epilogue.scale),
                      .shift = ptr(pw_epilogue.shift),
                      .residual = ptr(pw_epilogue.residual),
                      .relu = pw_epilogue.relu};
  const ContentVersion version = pw_weight.content_version();
  const float* px = x.data();
  const float* pdw = dw_weight.data();
  const float* ppw = pw_weight.data();
  float* py = out.data();
  const int64_t in_sample = gd.C * gd.H * gd.W, out_sample = gp.OC * gp.P();
  const int64_t chunks = (gd.N + chunk - 1) / chunk;
  // With the tile kernel the depthwise output goes to the 1x1 kernel as rows
  // of channels (one per pixel): no transpose back to NCHW, no column packing.
  const pointwise::Isa isa = pointwise::best_isa();
  const bool rows = depthwise::tiles::supports(gd) && !pointwise::planes_kernel(gp, isa);
  const int64_t pad = pointwise::rows_padding(isa);
  // Rows a multiple of 256 bytes apart put a panel's 12 rows in one or two L1
  // sets (the 1x1 kernel reads them side by side); one cache line more per row
  // spreads them. The register block alone on rows 2 KB apart ran ~25 % slower
  // than on rows 2 KB + 64 B apart; MobileNetV1 inference gains ~1 %.
  const int64_t ld = gp.C % 64 == 0 ? gp.C + 16 : gp.C;
  const int64_t mid_size = rows ? (chunk * gp.P() + pad) * ld : chunk * per_sample;
  parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    float* mid = chunk_scratch().get(mid_size);
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t n0 = c * chunk, n = std::min(chunk, gd.N - n0);
      ConvGeometry d = gd, p = gp;
      d.N = n, p.N = n;
      ConvOutput o = op;
      if (o.residual) o.residual += n0 * out_sample;
      if (rows) {
        depthwise::tiles::forward_rows(px + n0 * in_sample, pdw, od, d, mid, ld);
        // The last panel's rows past the chunk: read, their outputs dropped.
        std::fill(mid + n * gp.P() * ld, mid + (n * gp.P() + pad) * ld, 0.f);
        pointwise::forward_rows(mid, ld, ppw, o, p, py + n0 * out_sample, isa, &version);
      } else {
        depthwise::forward(px + n0 * in_sample, pdw, od, d, mid);
        pointwise::forward(mid, ppw, o, p, py + n0 * out_sample, isa, &version);
      }
    }
  });
  return out;
}

int64_t separable_fused_runs() { return fused_runs.load(std::memory_order_relaxed); }

}  // namespace spruce::ops
