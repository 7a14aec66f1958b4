// Reshape and flatten: views of the same storage; the gradient is reshaped back.
#include "shape.h"

#include "../autograd.h"
#include "../error.h"

namespace spruce::ops {

Tensor reshape(const Tensor& x, Shape shape) {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw UsageError("reshape: more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw UsageError("reshape: cannot view " + shape_str(x.shape()) + " as " + shape_str(shape));
    shape[static_cast<size_t>(infer)] = x.numel() / known;
  }
  Tensor out = make_view(x, shape);
  record(out, "reshape", {x}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    Tensor& d = in[0].grad_or_zeros();
    float* pd = d.data();
    const float* g = d_out.data();
    for (int64_t i = 0; i < d.numel(); ++i) pd[i] += g[i];
  });
  return out;
}

Tensor flatten(const Tensor& x) {
  if (x.dim() < 1) throw UsageError("flatten of a scalar");
  return reshape(x, {x.size(0), -1});
}

}  // namespace spruce::ops
