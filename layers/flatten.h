// Flatten: keeps the batch dimension and flattens the rest (a free view).
#pragma once

#include "module.h"

namespace spruce {

/// x [N, ...] -> [N, prod(...)]. No parameters.
class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};

}  // namespace spruce
