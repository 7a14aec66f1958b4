// Elementwise ops: forward and backward side by side.
#include "core/ops/elementwise.h"

#include <stdexcept>

#include "core/autograd.h"
#include "core/parallel.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a.shape()) + " and " +
                                shape_str(b.shape()) + " differ");
}

/// dst[i] += s * src[i] over the whole tensor.
void accumulate(Tensor& dst, const Tensor& src, float s = 1.f) {
  float* d = dst.data();
  const float* g = src.data();
  parallel_for(0, dst.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) d[i] += s * g[i];
  });
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same_shape("add", a, b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = pa[i] + pb[i];
  });
  record(out, "add", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    for (Tensor& t : in)
      if (t.requires_grad()) accumulate(t.grad_or_zeros(), d_out);
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_same_shape("sub", a, b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = pa[i] - pb[i];
  });
  record(out, "sub", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    if (in[0].requires_grad()) accumulate(in[0].grad_or_zeros(), d_out);
    if (in[1].requires_grad()) accumulate(in[1].grad_or_zeros(), d_out, -1.f);
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_shape("mul", a, b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = pa[i] * pb[i];
  });
  record(out, "mul", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    const float* g = d_out.data();
    // d a = g * b, d b = g * a
    for (int k = 0; k < 2; ++k) {
      if (!in[k].requires_grad()) continue;
      float* d = in[k].grad_or_zeros().data();
      const float* other = in[1 - k].data();
      parallel_for(0, d_out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) d[i] += g[i] * other[i];
      });
    }
  });
  return out;
}

Tensor scale(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = s * pa[i];
  });
  record(out, "scale", {a}, [s](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    accumulate(in[0].grad_or_zeros(), d_out, s);
  });
  return out;
}

Tensor relu(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = px[i] > 0.f ? px[i] : 0.f;
  });
  // The output is enough: x > 0 exactly where out > 0.
  record(out, "relu", {x}, [](const Tensor& out, const Tensor& d_out, std::vector<Tensor>& in) {
    float* d = in[0].grad_or_zeros().data();
    const float* po = out.data();
    const float* g = d_out.data();
    parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        if (po[i] > 0.f) d[i] += g[i];
    });
  });
  return out;
}

Tensor sum(const Tensor& x) {
  double acc = 0.0;  // serial on purpose: a fixed order keeps the result bit-stable
  const float* px = x.data();
  for (int64_t i = 0; i < x.numel(); ++i) acc += px[i];
  Tensor out = Tensor::full({}, static_cast<float>(acc));
  record(out, "sum", {x}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    const float g = d_out.item();
    for (float& v : in[0].grad_or_zeros().span()) v += g;
  });
  return out;
}

Tensor mean(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) throw std::invalid_argument("mean of an empty tensor");
  return scale(sum(x), 1.f / static_cast<float>(n));
}

Tensor mul_mask(const Tensor& x, const Tensor& mask) {
  check_same_shape("mul_mask", x, mask);
  Tensor out = Tensor::empty(x.shape());
  const float* px = x.data();
  const float* pm = mask.data();
  float* po = out.data();
  parallel_for(0, out.numel(), kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) po[i] = px[i] * pm[i];
  });
  // The mask is a constant: only x is an input of the node.
  record(out, "mul_mask", {x}, [mask](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    float* d = in[0].grad_or_zeros().data();
    const float* g = d_out.data();
    const float* pm = mask.data();
    for (int64_t i = 0; i < d_out.numel(); ++i) d[i] += g[i] * pm[i];
  });
  return out;
}

}  // namespace spruce::ops
