// conv_batch_norm: picks the fused inference conv or the plain layer chain.
#include "conv_batch_norm.h"

#include "../core/autograd.h"
#include "../core/ops/batch_norm.h"
#include "../core/ops/conv2d.h"
#include "../core/ops/conv2d_pair.h"
#include "../core/ops/conv2d_separable.h"
#include "../core/ops/elementwise.h"

namespace spruce {

namespace {

/// bn's eval-mode affine map with conv's bias folded in:
/// bn(conv + b) = scale conv + (shift + scale b).
ops::ChannelAffine folded_affine(const Conv2d& conv, const BatchNorm2d& bn) {
  ops::ChannelAffine a = ops::batch_norm_eval_affine(bn.weight(), bn.bias(), bn.running_mean(),
                                                     bn.running_var(), bn.options().eps);
  if (conv.bias().defined()) a.shift = ops::add(a.shift, ops::mul(a.scale, conv.bias()));
  return a;
}

}  // namespace

Tensor conv_batch_norm(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const ConvBnTail& tail) {
  if (bn.is_training()) {  // the conv takes the batch statistics' sums as it writes
    // Centered on 0, not on the running mean: a training forward then
    // depends on its inputs and parameters only, bit for bit.
    ops::ChannelSums sums;
    sums.center.assign(static_cast<size_t>(bn.running_mean().numel()), 0.f);
    const Tensor y = conv.forward_with_sums(x, &sums);
    return bn.forward_fused(y, {.residual = tail.residual, .relu = tail.relu}, &sums);
  }
  if (grad_mode_enabled())
    return bn.forward_fused(conv.forward(x), {.residual = tail.residual, .relu = tail.relu});
  const ops::ChannelAffine a = folded_affine(conv, bn);
  return conv.forward_fused(
      x, {.scale = a.scale, .shift = a.shift, .residual = tail.residual, .relu = tail.relu});
}

Tensor separable_conv_batch_norm(Conv2d& dw, BatchNorm2d& bn1, Conv2d& pw, BatchNorm2d& bn2,
                                 const Tensor& x) {
  if (bn1.is_training() || bn2.is_training() || grad_mode_enabled() || dw.runs_sparse(x.shape()) ||
      pw.runs_sparse(dw.output_shape(x.shape()))) {
    const Tensor mid = conv_batch_norm(dw, bn1, x, {.relu = true});
    return conv_batch_norm(pw, bn2, mid, {.relu = true});
  }
  const ops::ChannelAffine a1 = folded_affine(dw, bn1), a2 = folded_affine(pw, bn2);
  return ops::separable_conv2d_fused(
      x, dw.masked_weight(), {.scale = a1.scale, .shift = a1.shift, .relu = true}, dw.options(),
      pw.masked_weight(), {.scale = a2.scale, .shift = a2.shift, .relu = true});
}

Tensor conv_pair_batch_norm(Conv2d& c1, BatchNorm2d& bn1, Conv2d& c2, BatchNorm2d& bn2,
                            const Tensor& x, const Tensor& residual) {
  auto same_geometry = [](const Conv2d& c) {  // the pair's: stride 1, padding 1, one group
    const ops::Conv2dOptions& o = c.options();
    return o.stride == 1 && o.padding == 1 && o.groups == 1;
  };
  auto two_layers = [&] {
    const Tensor mid = conv_batch_norm(c1, bn1, x, {.relu = true});
    return conv_batch_norm(c2, bn2, mid, {.residual = residual, .relu = true});
  };
  if (bn1.is_training() || bn2.is_training() || grad_mode_enabled() || !same_geometry(c1) ||
      !same_geometry(c2) || c1.kernel_size() != 3 || c2.kernel_size() != 3)
    return two_layers();
  const bool sparse1 = c1.runs_sparse(x.shape()),
             sparse2 = c2.runs_sparse(c1.output_shape(x.shape()));
  if (sparse1 != sparse2) return two_layers();  // one of each
  const ops::ChannelAffine a1 = folded_affine(c1, bn1), a2 = folded_affine(c2, bn2);
  if (sparse1)
    return c1.forward_sparse_pair(
        x, {.scale = a1.scale, .shift = a1.shift, .relu = true}, c2,
        {.scale = a2.scale, .shift = a2.shift, .residual = residual, .relu = true});
  return ops::conv2d_pair_fused(
      x, c1.masked_weight(), {.scale = a1.scale, .shift = a1.shift, .relu = true},
      c2.masked_weight(),
      {.scale = a2.scale, .shift = a2.shift, .residual = residual, .relu = true});
}

}  // namespace spruce
