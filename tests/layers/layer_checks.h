// Shared checks for layer and model tests (layers/README.md, "Testing a layer"): gradient
// check of the input and every parameter, state_dict round trip into a module
// built with another seed, and "a pruned weight stays zero".
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/random.h"
#include "core/tensor.h"
#include "layers/batch_norm2d.h"
#include "layers/module.h"

namespace spruce::testing {

/// Seeded normal(0, 1) values.
inline Tensor randn(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen);
}

/// Largest |a - b| over two same-shape tensors.
inline float max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  float m = 0.f;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.at(i) - b.at(i)));
  return m;
}

/// Moves every ReLU input of a conv-BN-ReLU composition far from the kink, so
/// a finite-difference step never crosses one: each BatchNorm2d gets scale
/// 0.2 and shift +4 / -4 on alternate channels (active / dead units), except
/// BNs under a "shortcut" child, which get shift 0. Normalised values stay
/// within about +-7 in a small batch, so 0.2 z + shift keeps its sign; inputs
/// in [-1, 1] on an identity shortcut keep it too. Used for blocks, where a
/// weight shared by many positions would otherwise move dozens of units
/// across their kinks at once, too many for the kink detector.
inline void keep_relus_off_kinks(Module& m, bool in_shortcut = false) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m); bn && bn->weight().defined()) {
    bn->weight().fill_(0.2f);
    for (int64_t c = 0; c < bn->num_features(); ++c)
      bn->bias().data()[c] = in_shortcut ? 0.f : (c % 2 == 0 ? 4.f : -4.f);
  }
  for (auto& [name, child] : m.named_children())
    keep_relus_off_kinks(*child, in_shortcut || name == "shortcut");
}

/// Seeded uniform values in [-1, 1].
inline Tensor rand_signed(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return Tensor::rand(shape, gen, -1.f, 1.f);
}

/// Gradient check of m.forward(x) with respect to x and every parameter.
inline void check_module_gradients(Module& m, const Tensor& x,
                                   const GradCheckOptions& options = {}) {
  std::vector<Tensor> inputs{x.clone().set_requires_grad(true)};
  std::vector<std::string> names{"input"};
  for (auto& [name, p] : m.named_parameters()) {
    inputs.push_back(p);  // the module's own handle: perturbing it perturbs the layer
    names.push_back(name);
  }
  // One input at a time, so a failure names the tensor.
  for (size_t k = 0; k < inputs.size(); ++k) {
    std::vector<Tensor> one = inputs;
    for (size_t j = 0; j < one.size(); ++j) one[j].set_requires_grad(j == k);
    const GradCheckResult r =
        grad_check([&m](const std::vector<Tensor>& in) { return m.forward(in[0]); }, one, options);
    INFO("gradient of " << names[k] << ": " << r.message);
    CHECK(r.ok);
  }
  for (size_t j = 1; j < inputs.size(); ++j) inputs[j].set_requires_grad(true);
}

/// Builds two modules with different seeds; loading the first's state_dict
/// into the second makes every state entry and the eval-mode output equal.
inline void check_state_round_trip(const std::function<std::unique_ptr<Module>(uint64_t)>& make,
                                   const Tensor& x) {
  auto a = make(1);
  auto b = make(2);
  {
    // A training-mode pass moves running statistics away from their defaults.
    NoGradGuard no_grad;
    a->forward(x);
  }
  a->eval();
  b->eval();
  NoGradGuard no_grad;
  const Tensor ya = a->forward(x);
  if (a->num_parameters() > 0) CHECK(max_abs_diff(ya, b->forward(x)) > 0.f);
  b->load_state_dict(a->state_dict());
  const NamedTensors sa = a->state_dict(), sb = b->state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sb[i].first);
    CHECK(max_abs_diff(sa[i].second, sb[i].second) == 0.f);
    CHECK(!sa[i].second.shares_storage_with(sb[i].second));
  }
  CHECK(max_abs_diff(ya, b->forward(x)) == 0.f);
}

/// Masks every third entry of `param`, runs forward/backward, checks the
/// gradient is zero exactly there (and not everywhere), takes a plain SGD
/// step w -= lr * grad plus a drift on the pruned entries, checks the forward
/// ignores the drift, re-applies the masks and checks the pruned entries are
/// exactly +0 while the kept ones moved.
inline void check_pruned_weight_stays_zero(Module& m, const std::string& param, const Tensor& x) {
  Tensor w = m.parameter(param);
  Tensor mask = Tensor::ones(w.shape());
  for (int64_t i = 0; i < w.numel(); i += 3) mask.data()[i] = 0.f;
  m.set_mask(param, mask);
  REQUIRE(m.has_mask(param));
  bool listed = false;
  for (auto& [name, t] : m.named_buffers()) listed = listed || name == param + "_mask";
  CHECK(listed);

  m.zero_grad();
  const Tensor out = m.forward(x);
  out.backward(randn(out.shape(), 99));
  const Tensor g = w.grad();
  REQUIRE(g.defined());
  int64_t masked_with_gradient = 0, kept_with_gradient = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (mask.at(i) == 0.f)
      masked_with_gradient += g.at(i) != 0.f;
    else
      kept_with_gradient += g.at(i) != 0.f;
  }
  CHECK(masked_with_gradient == 0);
  CHECK(kept_with_gradient > 0);

  const Tensor before = w.clone();
  const float lr = 0.1f;
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] -= lr * g.at(i);
  // Drift on the pruned entries (as weight decay would add), which apply_masks must undo.
  for (int64_t i = 0; i < w.numel(); i += 3) w.data()[i] += 0.5f;
  Tensor y_drifted;
  {
    NoGradGuard no_grad;
    y_drifted = m.forward(x);  // the forward sees weight * mask: the drift is invisible
  }
  m.apply_masks();
  int64_t pruned_not_zero = 0, moved = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (mask.at(i) == 0.f)
      pruned_not_zero += w.at(i) != 0.f || std::signbit(w.at(i));  // exactly +0
    else
      moved += w.at(i) != before.at(i);
  }
  CHECK(pruned_not_zero == 0);
  CHECK(moved > 0);
  NoGradGuard no_grad;
  CHECK(max_abs_diff(m.forward(x), y_drifted) == 0.f);
  m.zero_grad();
}

}  // namespace spruce::testing
