// Per-channel sums of a conv's output, taken while the conv writes it, for a
// batch norm in training that follows: its statistics then need no pass of
// their own over the output (a read of every activation from memory: 3.4 %
// of an AVX2 ResNet-20 training step's perf samples, core/README.md).
#pragma once

#include <cstdint>
#include <vector>

namespace spruce::ops {

/// Sums of a conv output y [N, C, H, W] about a per-channel center:
///   s1[n C + c] = sum over sample n's plane of (y - center[c]),
///   s2[n C + c] = the same of (y - center[c])^2.
/// The caller sets `center` (C values; conv_batch_norm uses 0, and a batch
/// norm re-sums a channel whose mean lies far from it); a conv that can take
/// the sums sizes s1 and s2 and sets `filled`, one that cannot leaves
/// `filled` false. Per sample, so that the totals, added over n in order, are
/// the same whatever the thread count.
struct ChannelSums {
  std::vector<float> center;
  std::vector<double> s1, s2;
  bool filled = false;
};

}  // namespace spruce::ops
