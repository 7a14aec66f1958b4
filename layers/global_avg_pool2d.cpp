// GlobalAvgPool2d: forwards through ops::global_avg_pool2d.
#include "global_avg_pool2d.h"

#include "../core/ops/pooling.h"

namespace spruce {

Tensor GlobalAvgPool2d::forward(const Tensor& x) { return ops::global_avg_pool2d(x); }

}  // namespace spruce
