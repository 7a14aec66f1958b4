// The graph walk behind Tensor::backward().
#include "autograd.h"

#include <unordered_set>

#include "error.h"

namespace spruce {
namespace {
thread_local bool g_grad_mode = true;
}

bool grad_mode_enabled() { return g_grad_mode; }

NoGradGuard::NoGradGuard() : previous_(g_grad_mode) { g_grad_mode = false; }
NoGradGuard::~NoGradGuard() { g_grad_mode = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* name, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.set_requires_grad(true);
  out.set_grad_fn(std::move(node));
}

void Tensor::backward(const Tensor& seed) const {
  if (!requires_grad()) throw UsageError("backward() on a tensor that does not require grad");
  Tensor root = *this;
  if (seed.defined()) {
    if (seed.shape() != shape())
      throw UsageError("backward seed of shape " + shape_str(seed.shape()) +
                       " for a tensor of shape " + shape_str(shape()));
    Tensor& g = root.grad_or_zeros();
    float* pg = g.data();
    const float* ps = seed.data();
    const int64_t n = numel();
    for (int64_t i = 0; i < n; ++i) pg[i] += ps[i];
  } else {
    if (numel() != 1)
      throw UsageError("backward() without a seed needs a one-element tensor, got " +
                       shape_str(shape()));
    root.grad_or_zeros().data()[0] += 1.f;
  }

  // Post-order DFS over nodes; reversed, it visits every tensor after all its consumers.
  std::vector<Tensor> order;
  std::unordered_set<TensorImpl*> visited;
  std::vector<std::pair<Tensor, size_t>> stack;
  stack.emplace_back(root, 0);
  visited.insert(root.impl());
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    const auto& node = t.grad_fn();
    if (node && next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      if (in.defined() && in.grad_fn() && !visited.count(in.impl())) {
        visited.insert(in.impl());
        stack.emplace_back(in, 0);
      }
      continue;
    }
    order.push_back(t);
    stack.pop_back();
  }

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Tensor& t = *it;
    std::shared_ptr<Node> node = t.grad_fn();
    if (!node) continue;
    if (t.grad().defined()) node->backward(t, t.grad(), node->inputs);
    // Free the graph as we go: this node's saved tensors and this
    // intermediate's gradient are no longer needed.
    t.set_grad_fn(nullptr);
    t.zero_grad();
  }
}

}  // namespace spruce
