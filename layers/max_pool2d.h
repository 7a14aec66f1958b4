// MaxPool2d: the maximum over each kernel window (PyTorch's nn.MaxPool2d with
// square windows).
#pragma once

#include "../core/ops/pooling.h"
#include "module.h"

namespace spruce {

/// x [N, C, H, W] -> [N, C, H_out, W_out], H_out = (H + 2 padding - kernel) / stride + 1.
/// Padded cells never win; the gradient goes to the first maximum of each
/// window. No parameters. Example: MaxPool2d({.kernel = 3, .stride = 2, .padding = 1}).
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const ops::Pool2dOptions& options = {});

  Tensor forward(const Tensor& x) override;

  const ops::Pool2dOptions& options() const { return options_; }

 private:
  ops::Pool2dOptions options_;
};

}  // namespace spruce
