// FLOP costs from the autograd graph of one forward: a walk from the output
// over every node once, reading the output shape of each conv2d and linear
// node and matching its weight input to the set's weights.
#include "flop_cost.h"

#include <string>
#include <unordered_set>

#include "../core/autograd.h"
#include "../core/error.h"
#include "../core/ops/mac_counter.h"

namespace spruce::pruning {
namespace {

/// The parameter behind an op's weight input: the input itself, or for a
/// masked weight the input of its mul_mask node.
Tensor weight_behind(const Tensor& input) {
  const auto& node = input.grad_fn();
  if (node && node->name == "mul_mask" && !node->inputs.empty()) return node->inputs[0];
  return input;
}

/// Multiply-adds per image of one weight of the op that produced `out`:
/// conv2d out [1, C_out, H_out, W_out] -> H_out·W_out; linear out [1, Out] -> 1.
int64_t cost_of_output(const std::string& op, const Tensor& out) {
  if (op == "conv2d") return out.size(2) * out.size(3);
  return 1;
}

}  // namespace

FlopCosts measure_flop_costs(Module& model, const PrunableSet& set, const Shape& sample) {
  if (sample.empty()) throw UsageError("measure_flop_costs: no sample shape");
  if (!grad_mode_enabled())
    throw UsageError("measure_flop_costs: reads the autograd graph, so not inside a NoGradGuard");
  FlopCosts costs;
  costs.per_weight.assign(static_cast<size_t>(set.size()), 0);
  const bool was_training = model.is_training();
  model.eval();  // batch norm on running statistics: nothing in the model changes
  Tensor out;
  {
    ops::MacCounter counter;
    Shape batch{1};
    batch.insert(batch.end(), sample.begin(), sample.end());
    out = model(Tensor::zeros(batch));
    costs.model_macs = counter.total();
  }
  model.train(was_training);

  std::vector<Tensor> stack{out};
  std::unordered_set<const Node*> seen;
  while (!stack.empty()) {
    const Tensor t = stack.back();
    stack.pop_back();
    const auto& node = t.grad_fn();
    if (!node || !seen.insert(node.get()).second) continue;
    if ((node->name == "conv2d" || node->name == "linear") && node->inputs.size() >= 2) {
      const Tensor w = weight_behind(node->inputs[1]);
      for (int64_t l = 0; l < set.size(); ++l)
        if (set.param(l).weight.same(w))
          costs.per_weight[static_cast<size_t>(l)] += cost_of_output(node->name, t);
    }
    for (const auto& in : node->inputs) stack.push_back(in);
  }
  for (int64_t l = 0; l < set.size(); ++l)
    if (costs.per_weight[static_cast<size_t>(l)] == 0)
      throw UsageError("measure_flop_costs: '" + set.param(l).name +
                       "' is not the weight of a conv or linear op in the model's forward");
  return costs;
}

void attach_flop_costs(Module& model, PrunableSet& set, const Shape& sample) {
  FlopCosts costs = measure_flop_costs(model, set, sample);
  int64_t prunable = 0;
  for (int64_t l = 0; l < set.size(); ++l)
    prunable += set.param(l).numel() * costs.per_weight[static_cast<size_t>(l)];
  if (prunable > costs.model_macs)
    throw UsageError("attach_flop_costs: the prunable weights cost " + std::to_string(prunable) +
                     " multiply-adds, more than the model's " + std::to_string(costs.model_macs));
  set.set_costs(std::move(costs.per_weight), costs.model_macs - prunable);
}

}  // namespace spruce::pruning
