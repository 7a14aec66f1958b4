// Compact checkpoints: every tensor that is mostly zeros (pruned weights) or
// all zeros and ones (masks) stored as a bitmask of its nonzero entries plus
// the nonzero values alone, inside an ordinary checkpoint container
// (checkpoint.h), which supplies the magic, version, CRC-32, atomic write and
// the bounds checks on every length.
//
// Encoding of a tensor "<name>" of shape S with n elements, when smaller than
// the dense n x 4 bytes:
//   metadata "sparse.shape/<name>"  the dims of S, space separated ("16 16 3 3";
//                                    "" for a scalar)
//   tensor   "sparse.bits/<name>"    [ceil(n / 32)] 32-bit words whose bits are
//                                    stored in the float slots unchanged (memcpy);
//                                    bit i % 32 of word i / 32 is set when element
//                                    i is nonzero (any bit pattern but +0.0, so
//                                    -0.0 and NaN survive); bits past n are 0
//   tensor   "sparse.values/<name>"  [popcount] the nonzero values in order, or
//                                    absent when every nonzero is exactly 1 (masks)
// plus metadata "sparse.format" = "1". Tensors stored densely keep their name.
// The round trip is bit-exact.
//
// core knows nothing of models or pruning: any tensor with zeros qualifies.
#pragma once

#include "checkpoint.h"

namespace spruce::io {

/// Bytes of the metadata key that marks a compact checkpoint.
inline constexpr const char* kSparseFormatKey = "sparse.format";

/// `ckpt` with each tensor replaced by its bitmask form where that is smaller.
Checkpoint compress_checkpoint(const Checkpoint& ckpt);

/// True when `ckpt` holds bitmask-encoded tensors.
bool is_compressed(const Checkpoint& ckpt);

/// The dense checkpoint back (metadata without the sparse.* keys). Checks
/// everything: a missing or unknown part, a shape that does not parse or
/// overflows, a bitmask of the wrong length, a bit set past the tensor's end,
/// a value count that differs from the bitmask's popcount -> one-line
/// FormatError naming ckpt.source, the tensor and the field.
Checkpoint expand_checkpoint(const Checkpoint& ckpt);

}  // namespace spruce::io
