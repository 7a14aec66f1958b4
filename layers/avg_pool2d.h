// AvgPool2d: the mean over each kernel window (PyTorch's nn.AvgPool2d with
// square windows and count_include_pad = true).
#pragma once

#include "../core/ops/pooling.h"
#include "module.h"

namespace spruce {

/// x [N, C, H, W] -> [N, C, H_out, W_out], H_out = (H + 2 padding - kernel) / stride + 1.
/// Padded cells count as zeros in the divisor. No parameters.
/// Example: AvgPool2d({.kernel = 2, .stride = 2}).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const ops::Pool2dOptions& options = {});

  Tensor forward(const Tensor& x) override;

  const ops::Pool2dOptions& options() const { return options_; }

 private:
  ops::Pool2dOptions options_;
};

}  // namespace spruce
