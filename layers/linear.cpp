// Linear: registers weight and bias, forwards through ops::linear.
#include "linear.h"

#include <string>

#include "../core/autograd.h"
#include "../core/error.h"
#include "../core/ops/matmul.h"
#include "../core/ops/sparse_conv2d.h"
#include "init.h"

namespace spruce {

Linear::Linear(int64_t in_features, int64_t out_features, Bias bias, Generator& gen)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0)
    throw UsageError("Linear: features must be positive, got " + std::to_string(in_features) +
                     " -> " + std::to_string(out_features));
  Tensor w = Tensor::empty({out_features, in_features});
  Tensor b = bias == Bias::kYes ? Tensor::empty({out_features}) : Tensor();
  init::default_weight_and_bias_(w, b, gen);
  weight_ = register_parameter("weight", w, Prunable::kYes);
  if (bias == Bias::kYes) bias_ = register_parameter("bias", b);
}

Tensor Linear::forward(const Tensor& x) {
  if (!is_training() && !grad_mode_enabled() && x.dim() == 2 && runs_sparse())
    return ops::sparse_linear(x, weight_, mask("weight"), sparse_, bias_);
  return ops::linear(x, masked_parameter("weight"), bias_);
}

}  // namespace spruce
