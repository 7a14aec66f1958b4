// Shape ops: free views of contiguous data, differentiable.
#pragma once

#include "../tensor.h"

namespace spruce::ops {

/// Same data, new shape of equal numel; one -1 entry is inferred.
Tensor reshape(const Tensor& x, Shape shape);
/// [N, ...] -> [N, prod(...)].
Tensor flatten(const Tensor& x);

}  // namespace spruce::ops
