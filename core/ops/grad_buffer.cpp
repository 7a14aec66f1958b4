// grad_for_write (see core/ops/grad_buffer.h).
#include "grad_buffer.h"

namespace spruce::ops {

float* grad_for_write(Tensor& t, bool& fresh) {
  fresh = !t.grad().defined();
  if (fresh) t.set_grad(Tensor::empty(t.shape()));
  Tensor g = t.grad();  // a handle on the same storage, writable
  return g.data();
}

}  // namespace spruce::ops
