// Define-by-run reverse-mode autograd.
//
// Every differentiable op computes its forward result and, when any input
// needs a gradient and grad mode is on, attaches a Node to the result. The
// node keeps the inputs and a backward closure that *adds* into the inputs'
// gradients (`+=`, never `=`), computing only those that need one.
// Tensor::backward() sorts the graph once in reverse topological order, runs
// each node once, and frees the graph (nodes and intermediate gradients) as
// it goes, so memory peaks during backward and returns afterwards.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace spruce {

/// Backward of one op: `out` is the op's result, `d_out` the gradient flowing
/// into it (same shape); add the input gradients into inputs[i].grad_or_zeros()
/// for each input with requires_grad().
using BackwardFn =
    std::function<void(const Tensor& out, const Tensor& d_out, std::vector<Tensor>& inputs)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;
  BackwardFn backward;
};

/// Global switch: false inside a NoGradGuard (evaluation, Fisher bookkeeping).
bool grad_mode_enabled();

/// Disables graph recording for its lifetime (like torch.no_grad()).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// True when grad mode is on and any of the inputs requires a gradient.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

/// Attaches a node to `out` when `inputs` need gradients (no-op otherwise).
/// Every op ends with this call; see core/ops/elementwise.cpp for examples.
void record(Tensor& out, const char* name, std::vector<Tensor> inputs, BackwardFn backward);

}  // namespace spruce
