// Elementwise ops and reductions, each differentiable.
#pragma once

#include "../tensor.h"

namespace spruce::ops {

/// a + b, same shape.
Tensor add(const Tensor& a, const Tensor& b);
/// a - b, same shape.
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b elementwise, same shape.
Tensor mul(const Tensor& a, const Tensor& b);
/// a * s.
Tensor scale(const Tensor& a, float s);
/// max(x, 0). The backward uses the output (x > 0 exactly where out > 0).
Tensor relu(const Tensor& x);
/// Sum of all elements -> shape {}.
Tensor sum(const Tensor& x);
/// Mean of all elements -> shape {}.
Tensor mean(const Tensor& x);
/// x * mask with a constant 0/1 mask of the same shape (no gradient to the
/// mask): pruned weights contribute nothing and receive a zero gradient.
Tensor mul_mask(const Tensor& x, const Tensor& mask);

}  // namespace spruce::ops
