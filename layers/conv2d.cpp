// Conv2d: registers weight and bias, forwards through ops::conv2d.
#include "conv2d.h"

#include <string>

#include "../core/autograd.h"
#include "../core/error.h"
#include "../core/ops/sparse_conv2d.h"
#include "init.h"

namespace spruce {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
               const ops::Conv2dOptions& options, Bias bias, Generator& gen)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      options_(options) {
  const int64_t g = options.groups;
  if (in_channels <= 0 || out_channels <= 0 || kernel_size <= 0 || options.stride <= 0 ||
      options.padding < 0 || g <= 0 || in_channels % g != 0 || out_channels % g != 0)
    throw UsageError("Conv2d: invalid configuration in=" + std::to_string(in_channels) + " out=" +
                     std::to_string(out_channels) + " kernel=" + std::to_string(kernel_size) +
                     " stride=" + std::to_string(options.stride) + " padding=" +
                     std::to_string(options.padding) + " groups=" + std::to_string(g));
  Tensor w = Tensor::empty({out_channels, in_channels / g, kernel_size, kernel_size});
  Tensor b = bias == Bias::kYes ? Tensor::empty({out_channels}) : Tensor();
  init::default_weight_and_bias_(w, b, gen);
  weight_ = register_parameter("weight", w, Prunable::kYes);
  if (bias == Bias::kYes) bias_ = register_parameter("bias", b);
}

Shape Conv2d::output_shape(const Shape& input) const {
  if (input.size() != 4) throw UsageError("Conv2d: input must be 4-D, got " + shape_str(input));
  auto out = [&](int64_t n) {
    return (n + 2 * options_.padding - kernel_size_) / options_.stride + 1;
  };
  return {input[0], out_channels_, out(input[2]), out(input[3])};
}

bool Conv2d::runs_sparse(const Shape& input) {
  if (options_.groups != 1 || input.size() != 4) return false;
  const Shape out = output_shape(input);
  return sparse_.use_sparse(
      weight_, mask("weight"),
      ops::sparse_conv_max_density(kernel_size_, options_.stride, out[2] * out[3], out[0]));
}

Tensor Conv2d::forward(const Tensor& x) { return forward_with_sums(x, nullptr); }

Tensor Conv2d::forward_with_sums(const Tensor& x, ops::ChannelSums* sums) {
  if (!is_training() && !grad_mode_enabled() && runs_sparse(x.shape())) {
    if (sums) sums->filled = false;
    return ops::sparse_conv2d_fused(x, weight_, mask("weight"), sparse_, {.shift = bias_},
                                    options_);
  }
  return ops::conv2d(x, masked_weight(), bias_, options_, sums);
}

Tensor Conv2d::forward_fused(const Tensor& x, const ops::ConvEpilogue& epilogue) {
  if (!grad_mode_enabled() && runs_sparse(x.shape()))
    return ops::sparse_conv2d_fused(x, weight_, mask("weight"), sparse_, epilogue, options_);
  return ops::conv2d_fused(x, masked_weight(), epilogue, options_);
}

Tensor Conv2d::forward_sparse_pair(const Tensor& x, const ops::ConvEpilogue& epilogue, Conv2d& then,
                                   const ops::ConvEpilogue& then_epilogue) {
  if (grad_mode_enabled() || !runs_sparse(x.shape()) || !then.runs_sparse(output_shape(x.shape())))
    throw UsageError("Conv2d::forward_sparse_pair: both convs must run on the sparse kernels");
  return ops::sparse_conv2d_pair_fused(x, weight_, mask("weight"), sparse_, epilogue, then.weight_,
                                       then.mask("weight"), then.sparse_, then_epilogue);
}

}  // namespace spruce
