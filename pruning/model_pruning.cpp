// Masks and Fisher gradients on a Module.
#include "model_pruning.h"

#include "../core/error.h"
#include "../core/ops/loss.h"

namespace spruce::pruning {

PrunableSet attach_masks(Module& model, const std::vector<std::string>& patterns) {
  const auto names = model.prunable_parameter_names(patterns);
  if (names.empty()) {
    std::string list;
    for (const auto& p : patterns) list += (list.empty() ? "" : ", ") + p;
    throw UsageError("no prunable weight matches the patterns {" + list + "}");
  }
  PrunableSet set;
  for (const auto& name : names) {
    Tensor w = model.parameter(name);
    if (!model.has_mask(name)) model.set_mask(name, Tensor::ones(w.shape()));
    set.add(name, w, model.mask(name));
  }
  return set;
}

void collect_fisher_gradients(Module& model, const PrunableSet& set, int64_t m,
                              const BatchSource& next_batch, GradientBank& bank,
                              const std::function<void(int64_t)>& progress) {
  const bool was_training = model.is_training();
  model.eval();
  for (int64_t i = 0; i < m; ++i) {
    auto [images, labels] = next_batch();
    model.zero_grad();
    ops::cross_entropy(model(images), labels).backward();
    bank.add_from_grads(set);
    if (progress) progress(i + 1);
  }
  model.zero_grad();
  model.train(was_training);
}

}  // namespace spruce::pruning
