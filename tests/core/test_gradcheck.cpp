// The gradient checker itself: it must catch wrong backwards and sample big tensors.
#include <doctest/doctest.h>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/random.h"

using namespace spruce;

namespace {
/// Forward y = 2x; the backward multiplies by `claimed`.
std::function<Tensor(const std::vector<Tensor>&)> doubling(float claimed) {
  return [claimed](const std::vector<Tensor>& in) {
    Tensor out = Tensor::empty(in[0].shape());
    for (int64_t i = 0; i < out.numel(); ++i) out.data()[i] = 2.f * in[0].data()[i];
    record(out, "doubling", {in[0]},
           [claimed](const Tensor&, const Tensor& d, std::vector<Tensor>& xs) {
             float* g = xs[0].grad_or_zeros().data();
             for (int64_t i = 0; i < d.numel(); ++i) g[i] += claimed * d.data()[i];
           });
    return out;
  };
}
}  // namespace

TEST_CASE("a correct backward passes, a wrong factor fails") {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  Generator g(1);
  auto good = grad_check(doubling(2.f), {Tensor::randn({4}, g).set_requires_grad(true)}, o);
  CHECK(good.ok);
  CHECK(good.checked == 4);
  auto bad = grad_check(doubling(3.f), {Tensor::randn({4}, g).set_requires_grad(true)}, o);
  CHECK_FALSE(bad.ok);
  CHECK(bad.message.find("numeric") != std::string::npos);
}

TEST_CASE("a backward that assigns instead of accumulating is caught when inputs are reused") {
  // y = f(x) + f(x) with f = doubling: a backward that overwrote the gradient would give 2, not 4.
  GradCheckOptions o;
  o.kink_tolerance = 0;
  Generator g(2);
  auto r = grad_check(
      [](const std::vector<Tensor>& in) {
        Tensor a = doubling(2.f)(in);
        Tensor b = doubling(2.f)(in);
        Tensor out = Tensor::empty(a.shape());
        for (int64_t i = 0; i < out.numel(); ++i) out.data()[i] = a.data()[i] + b.data()[i];
        record(out, "plus", {a, b}, [](const Tensor&, const Tensor& d, std::vector<Tensor>& xs) {
          for (auto& x : xs)
            for (int64_t i = 0; i < d.numel(); ++i) x.grad_or_zeros().data()[i] += d.data()[i];
        });
        return out;
      },
      {Tensor::randn({3}, g).set_requires_grad(true)}, o);
  CHECK(r.ok);
}

TEST_CASE("big inputs are sampled") {
  GradCheckOptions o;
  o.kink_tolerance = 0;
  o.max_samples = 10;
  Generator g(3);
  auto r = grad_check(doubling(2.f), {Tensor::randn({1000}, g).set_requires_grad(true)}, o);
  CHECK(r.ok);
  CHECK(r.checked == 10);
}

TEST_CASE("an op that records nothing is reported, not passed") {
  Generator g(4);
  auto r = grad_check([](const std::vector<Tensor>& in) { return in[0].detach(); },
                      {Tensor::randn({3}, g).set_requires_grad(true)});
  CHECK_FALSE(r.ok);
}
