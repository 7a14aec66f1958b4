// Flatten: forwards through ops::flatten.
#include "flatten.h"

#include "../core/ops/shape.h"

namespace spruce {

Tensor Flatten::forward(const Tensor& x) { return ops::flatten(x); }

}  // namespace spruce
