// ReLU: max(x, 0) elementwise, as a module for Sequential.
#pragma once

#include "module.h"

namespace spruce {

/// x of any shape -> same shape. No parameters.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};

}  // namespace spruce
