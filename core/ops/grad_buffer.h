// Writing an input's gradient from a backward function without zero-filling
// it first.
//
// The autograd contract is that a backward *adds* into its inputs'
// gradients, because a tensor with several consumers receives one
// contribution from each. Most activations have exactly one consumer, and
// for them zeros(shape) followed by += is a memset and a read of zeros per
// element for nothing. grad_for_write hands out the gradient together with
// whether it is fresh; a fresh one is uninitialised and must be assigned in
// full, which is the same sum.
#pragma once

#include "../tensor.h"

namespace spruce::ops {

/// The gradient buffer of `t` for a backward function to write into. When `t`
/// has no gradient yet, a new *uninitialised* one is attached and `fresh` is
/// set: the caller must then assign every element. Otherwise `fresh` is
/// false and the caller adds into it, as usual.
float* grad_for_write(Tensor& t, bool& fresh);

}  // namespace spruce::ops
