// Linear: a fully connected layer, y = x W^T + b (PyTorch's nn.Linear).
#pragma once

#include <cstdint>

#include "../core/ops/sparse_weights.h"
#include "../core/random.h"
#include "module.h"

namespace spruce {

/// x [N, in_features] -> [N, out_features].
/// Parameters: "weight" [out_features, in_features] (prunable) and, when
/// `bias`, "bias" [out_features]. PyTorch's default initialisation:
/// weight ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a = sqrt(5)), same
/// bound for the bias. In eval mode under NoGradGuard a sparse enough masked
/// weight runs the sparse kernels (as Conv2d does).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Bias bias = Bias::kYes,
         Generator& gen = default_generator());

  Tensor forward(const Tensor& x) override;
  /// Whether inference currently runs this layer on the sparse kernels.
  bool runs_sparse() { return sparse_.use_sparse(weight_, mask("weight")); }

  Tensor weight() const { return weight_; }
  /// Undefined when the layer has no bias.
  Tensor bias() const { return bias_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
  Tensor weight_;  // [out, in]
  Tensor bias_;    // [out] or undefined
  ops::SparseWeightCache sparse_;
};

}  // namespace spruce
