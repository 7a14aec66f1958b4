// conv_batch_norm: picks the fused inference conv or the plain layer chain.
#include "conv_batch_norm.h"

#include "../core/autograd.h"
#include "../core/ops/batch_norm.h"
#include "../core/ops/conv2d.h"
#include "../core/ops/elementwise.h"

namespace spruce {

Tensor conv_batch_norm(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const ConvBnTail& tail) {
  if (bn.is_training() || grad_mode_enabled()) {
    Tensor out = bn.forward(conv.forward(x));
    if (tail.residual.defined()) out = ops::add(out, tail.residual);
    return tail.relu ? ops::relu(out) : out;
  }
  ops::ChannelAffine a = ops::batch_norm_eval_affine(bn.weight(), bn.bias(), bn.running_mean(),
                                                     bn.running_var(), bn.options().eps);
  // bn(conv + b) = scale conv + (shift + scale b).
  if (conv.bias().defined()) a.shift = ops::add(a.shift, ops::mul(a.scale, conv.bias()));
  return conv.forward_fused(
      x, {.scale = a.scale, .shift = a.shift, .residual = tail.residual, .relu = tail.relu});
}

}  // namespace spruce
