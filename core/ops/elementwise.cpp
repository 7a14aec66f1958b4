// Elementwise ops: forward and backward side by side.
//
// Every loop copies its pointers into __restrict locals first: through the
// lambda's by-reference captures g++ cannot prove that a store to the output
// leaves the input pointers unchanged, reloads them every iteration and does
// not vectorise. A backward writes a gradient through grad_for_write: into a
// fresh gradient it assigns, into an existing one it adds.
#include "elementwise.h"

#include "../autograd.h"
#include "../error.h"
#include "../parallel.h"
#include "batch_norm.h"
#include "grad_buffer.h"

namespace spruce::ops {
namespace {
constexpr int64_t kGrain = 1 << 15;

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw UsageError(std::string(op) + ": shapes " + shape_str(a.shape()) + " and " +
                     shape_str(b.shape()) + " differ");
}

/// out[i] = f(a[i], b[i]) over n elements, in parallel.
template <class F>
void map2(int64_t n, const float* a, const float* b, float* out, F f) {
  parallel_for(0, n, kGrain, [=](int64_t lo, int64_t hi) {
    const float* __restrict pa = a;
    const float* __restrict pb = b;
    float* __restrict po = out;
    for (int64_t i = lo; i < hi; ++i) po[i] = f(pa[i], pb[i]);
  });
}

/// grad(t) (+)= f(a[i], b[i]): assigned into a fresh gradient, added otherwise.
template <class F>
void grad_map2(Tensor& t, const float* a, const float* b, F f) {
  bool fresh = false;
  float* d = grad_for_write(t, fresh);
  parallel_for(0, t.numel(), kGrain, [=](int64_t lo, int64_t hi) {
    const float* __restrict pa = a;
    const float* __restrict pb = b;
    float* __restrict pd = d;
    if (fresh) {
      for (int64_t i = lo; i < hi; ++i) pd[i] = f(pa[i], pb[i]);
    } else {
      for (int64_t i = lo; i < hi; ++i) pd[i] += f(pa[i], pb[i]);
    }
  });
}

/// grad(t) (+)= s * g.
void grad_scaled(Tensor& t, const Tensor& g, float s) {
  grad_map2(t, g.data(), g.data(), [s](float v, float) { return s * v; });
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_same_shape("add", a, b);
  Tensor out = Tensor::empty(a.shape());
  map2(out.numel(), a.data(), b.data(), out.data(), [](float x, float y) { return x + y; });
  record(out, "add", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    for (Tensor& t : in)
      if (t.requires_grad()) grad_scaled(t, d_out, 1.f);
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_same_shape("sub", a, b);
  Tensor out = Tensor::empty(a.shape());
  map2(out.numel(), a.data(), b.data(), out.data(), [](float x, float y) { return x - y; });
  record(out, "sub", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    if (in[0].requires_grad()) grad_scaled(in[0], d_out, 1.f);
    if (in[1].requires_grad()) grad_scaled(in[1], d_out, -1.f);
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_same_shape("mul", a, b);
  Tensor out = Tensor::empty(a.shape());
  map2(out.numel(), a.data(), b.data(), out.data(), [](float x, float y) { return x * y; });
  record(out, "mul", {a, b}, [](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    // d a = g * b, d b = g * a
    for (int k = 0; k < 2; ++k)
      if (in[k].requires_grad())
        grad_map2(in[k], d_out.data(), in[1 - k].data(), [](float g, float o) { return g * o; });
  });
  return out;
}

Tensor scale(const Tensor& a, float s) {
  Tensor out = Tensor::empty(a.shape());
  map2(out.numel(), a.data(), a.data(), out.data(), [s](float x, float) { return s * x; });
  record(out, "scale", {a}, [s](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    grad_scaled(in[0], d_out, s);
  });
  return out;
}

Tensor relu(const Tensor& x) {
  // After a batch norm, one fused node differentiates both (batch_norm.cpp).
  if (Tensor fused = relu_of_batch_norm(x); fused.defined()) return fused;
  Tensor out = Tensor::empty(x.shape());
  map2(out.numel(), x.data(), x.data(), out.data(),
       [](float v, float) { return v > 0.f ? v : 0.f; });
  // The output is enough: x > 0 exactly where out > 0. A select, not a
  // branch: it vectorises, and the signs are unpredictable.
  record(out, "relu", {x}, [](const Tensor& out, const Tensor& d_out, std::vector<Tensor>& in) {
    grad_map2(in[0], out.data(), d_out.data(), [](float o, float g) { return o > 0.f ? g : 0.f; });
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
  if (n == 0) throw UsageError("mean of an empty tensor");
  return scale(sum(x), 1.f / static_cast<float>(n));
}

Tensor mul_mask(const Tensor& x, const Tensor& mask) {
  check_same_shape("mul_mask", x, mask);
  Tensor out = Tensor::empty(x.shape());
  map2(out.numel(), x.data(), mask.data(), out.data(), [](float v, float m) { return v * m; });
  // The mask is a constant: only x is an input of the node.
  record(out, "mul_mask", {x}, [mask](const Tensor&, const Tensor& d_out, std::vector<Tensor>& in) {
    grad_map2(in[0], d_out.data(), mask.data(), [](float g, float m) { return g * m; });
  });
  return out;
}

}  // namespace spruce::ops
