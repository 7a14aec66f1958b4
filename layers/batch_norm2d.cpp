// BatchNorm2d: registers gamma, beta and the running statistics, forwards
// through ops::batch_norm with the module's training flag.
#include "batch_norm2d.h"

#include <string>

#include "../core/error.h"
#include "../core/ops/batch_norm.h"

namespace spruce {

BatchNorm2d::BatchNorm2d(int64_t num_features, const BatchNorm2dOptions& options)
    : num_features_(num_features), options_(options) {
  if (num_features <= 0)
    throw UsageError("BatchNorm2d: num_features must be positive, got " +
                     std::to_string(num_features));
  if (options.affine) {
    weight_ = register_parameter("weight", Tensor::ones({num_features}));
    bias_ = register_parameter("bias", Tensor::zeros({num_features}));
  } else {
    unit_scale_ = Tensor::ones({num_features});
    zero_shift_ = Tensor::zeros({num_features});
  }
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var_ = register_buffer("running_var", Tensor::ones({num_features}));
  num_batches_tracked_ =
      register_buffer("num_batches_tracked", Tensor::zeros({}), IfMissing::kKeep);
}

Tensor BatchNorm2d::forward(const Tensor& x) { return forward_fused(x, {}); }

Tensor BatchNorm2d::forward_fused(const Tensor& x, const ops::BatchNormTail& tail,
                                  const ops::ChannelSums* sums) {
  ops::BatchNormOptions o;
  o.training = is_training();
  o.momentum = options_.momentum;
  o.eps = options_.eps;
  o.sums = sums;
  if (o.training) num_batches_tracked_.data()[0] += 1.f;
  return options_.affine
             ? ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, o, tail)
             : ops::batch_norm(x, unit_scale_, zero_shift_, running_mean_, running_var_, o, tail);
}

}  // namespace spruce
