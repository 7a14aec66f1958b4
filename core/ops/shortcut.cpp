// Option-A shortcut: stride-2 subsample plus zero channel padding, forward and
// backward. Both directions are a gather/scatter between input pixel
// (n, c, 2i, 2j) and output pixel (n, c + pad, i, j); each output plane maps
// to one input plane, so the loops run in parallel over (n, c) planes.
#include "shortcut.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;  // output elements per parallel chunk
}  // namespace

Tensor shortcut_pad(const Tensor& x, int64_t out_channels) {
  if (x.dim() != 4)
    throw UsageError("shortcut_pad: input " + shape_str(x.shape()) + ", expected [N, C, H, W]");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (out_channels < C || (out_channels - C) % 2 != 0)
    throw UsageError("shortcut_pad: " + std::to_string(out_channels) + " output channels for " +
                     std::to_string(C) +
                     " input channels; need out_channels >= C with an even difference");
  const int64_t pad = (out_channels - C) / 2;
  const int64_t Ho = (H + 1) / 2, Wo = (W + 1) / 2;  // rows/cols 0, 2, 4, ... of H/W
  const int64_t in_plane = H * W, out_plane = Ho * Wo;
  Tensor out = Tensor::empty({N, out_channels, Ho, Wo});
  const float* px = x.data();
  float* po = out.data();
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(out_plane, 1));
  parallel_for(0, N * out_channels, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t n = q / out_channels, c = q % out_channels - pad;
      float* oplane = po + q * out_plane;
      if (c < 0 || c >= C) {  // a padding channel
        std::memset(oplane, 0, sizeof(float) * static_cast<size_t>(out_plane));
        continue;
      }
      const float* plane = px + (n * C + c) * in_plane;
      for (int64_t i = 0; i < Ho; ++i)
        for (int64_t j = 0; j < Wo; ++j) oplane[i * Wo + j] = plane[2 * i * W + 2 * j];
    }
  });
  record(out, "shortcut_pad", {x},
         [N, C, W, Ho, Wo, pad, out_channels, in_plane, out_plane, grain](
             const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
           float* dx = in[0].grad_or_zeros().data();
           const float* g = d_out.data();
           // Only the C middle channels of d_out reach x.
           parallel_for(0, N * C, grain, [&](int64_t lo, int64_t hi) {
             for (int64_t q = lo; q < hi; ++q) {
               const int64_t n = q / C, c = q % C;
               float* dplane = dx + q * in_plane;
               const float* gplane = g + (n * out_channels + c + pad) * out_plane;
               for (int64_t i = 0; i < Ho; ++i)
                 for (int64_t j = 0; j < Wo; ++j) dplane[2 * i * W + 2 * j] += gplane[i * Wo + j];
             }
           });
         });
  return out;
}

}  // namespace spruce::ops
