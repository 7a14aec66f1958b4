// Packed copies of conv weights kept between calls, for the dense kernels
// that lay a weight out for their micro-kernel (conv2d_pointwise.cpp):
// repacking MobileNetV1's pointwise weights on every call cost more than the
// products themselves at batch 1 (a 1024 x 1024 weight is 4 MB to read,
// transpose and write back for a few microseconds of multiply-adds).
//
// Staleness: a packed copy is keyed on the content version of the weight's
// storage (core/tensor.h), the weight's address inside it and the kernel's
// layout; any mutable access to the weight (an optimizer step, a load, a
// fill) changes the version, and the next call repacks. A packed copy never
// outlives the contents it was built from.
//
// Memory: when a storage is repacked its older copy is replaced (training
// keeps one copy per weight, rewritten each step), and the copies together
// are held to kPackedWeightBudget bytes, least recently used dropped first
// (weights rebuilt on every call, like a masked weight, churn through it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "../tensor.h"

namespace spruce::ops {

/// Which packed copy: the weight's storage contents, its address and the
/// layout (the kernel's own numbers: channel counts, block width, ...).
struct PackedWeightKey {
  ContentVersion version;
  const float* data = nullptr;
  int64_t layout[4] = {0, 0, 0, 0};
  bool operator==(const PackedWeightKey&) const = default;
};

inline constexpr int64_t kPackedWeightBudget = int64_t{64} << 20;

/// The packed copy of `key`, `size` floats, built by fill(dst) when it is
/// missing or stale. The copy stays valid while the returned pointer lives,
/// even if the cache drops or replaces it meanwhile. Thread-safe.
std::shared_ptr<const std::vector<float>> packed_weights(const PackedWeightKey& key, int64_t size,
                                                         const std::function<void(float*)>& fill);

/// How many times packed_weights() has filled a copy (tests).
int64_t packed_weight_fills();

}  // namespace spruce::ops
