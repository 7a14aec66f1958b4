// ReLU: forwards through ops::relu.
#include "relu.h"

#include "../core/ops/elementwise.h"

namespace spruce {

Tensor ReLU::forward(const Tensor& x) { return ops::relu(x); }

}  // namespace spruce
