// Softmax cross-entropy with a fused, numerically stable log-softmax.
#pragma once

#include <cstdint>
#include <span>

#include "../tensor.h"

namespace spruce::ops {

/// logits [N, C], labels N class indices in [0, C) -> mean loss, shape {}.
/// d logits = (softmax - onehot) / N.
Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels);

/// Number of rows whose arg-max equals the label (ties: lowest index).
int64_t count_correct(const Tensor& logits, std::span<const int32_t> labels);

}  // namespace spruce::ops
