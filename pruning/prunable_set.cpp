// PrunableSet: bookkeeping over tensor handles.
#include "prunable_set.h"

#include <algorithm>

#include "../core/error.h"

namespace spruce::pruning {

void PrunableSet::add(std::string name, Tensor weight, Tensor mask) {
  if (!weight.defined()) throw UsageError("PrunableSet: weight '" + name + "' is undefined");
  for (const auto& p : params_)
    if (p.name == name) throw UsageError("PrunableSet: duplicate name '" + name + "'");
  if (!mask.defined()) {
    mask = Tensor::ones(weight.shape());
  } else {
    if (mask.numel() != weight.numel())
      throw UsageError("PrunableSet: mask of '" + name + "' has shape " + shape_str(mask.shape()) +
                       ", weight " + shape_str(weight.shape()));
    for (float v : mask.span())
      if (v != 0.f && v != 1.f)
        throw UsageError("PrunableSet: mask of '" + name + "' holds " + std::to_string(v) +
                         ", expected only 0 and 1");
  }
  params_.push_back({std::move(name), std::move(weight), std::move(mask), numel_});
  numel_ += params_.back().numel();
}

std::vector<int64_t> PrunableSet::layer_sizes() const {
  std::vector<int64_t> sizes;
  for (const auto& p : params_) sizes.push_back(p.numel());
  return sizes;
}

int64_t PrunableSet::layer_of(int64_t q) const {
  if (q < 0 || q >= numel_)
    throw UsageError("PrunableSet: flat index " + std::to_string(q) + " outside [0, " +
                     std::to_string(numel_) + ")");
  // Last layer whose offset is <= q; empty layers share offsets, so skip to the one holding q.
  auto it = std::upper_bound(params_.begin(), params_.end(), q,
                             [](int64_t v, const PrunableParam& p) { return v < p.offset; });
  return static_cast<int64_t>(it - params_.begin()) - 1;
}

std::vector<float> PrunableSet::flat_weights() const {
  std::vector<float> w(static_cast<size_t>(numel_));
  for (const auto& p : params_) std::copy_n(p.weight.data(), p.numel(), w.begin() + p.offset);
  return w;
}

std::vector<float> PrunableSet::flat_mask() const {
  std::vector<float> m(static_cast<size_t>(numel_));
  for (const auto& p : params_) std::copy_n(p.mask.data(), p.numel(), m.begin() + p.offset);
  return m;
}

void PrunableSet::set_flat_weights(const std::vector<float>& values) {
  if (static_cast<int64_t>(values.size()) != numel_)
    throw UsageError("PrunableSet: " + std::to_string(values.size()) + " values for " +
                     std::to_string(numel_) + " weights");
  for (auto& p : params_) std::copy_n(values.begin() + p.offset, p.numel(), p.weight.data());
}

int64_t PrunableSet::pruned_count(int64_t layer) const {
  const auto m = param(layer).mask.span();
  return std::count(m.begin(), m.end(), 0.f);
}

int64_t PrunableSet::pruned_count() const {
  int64_t n = 0;
  for (int64_t l = 0; l < size(); ++l) n += pruned_count(l);
  return n;
}

void PrunableSet::prune(const std::vector<int64_t>& flat_indices) {
  for (int64_t q : flat_indices) {
    auto& p = params_[static_cast<size_t>(layer_of(q))];
    p.mask.data()[q - p.offset] = 0.f;
    p.weight.data()[q - p.offset] = 0.f;
  }
}

void PrunableSet::apply_masks() {
  for (auto& p : params_) {
    float* w = p.weight.data();
    const float* m = p.mask.data();
    for (int64_t i = 0; i < p.numel(); ++i)
      if (m[i] == 0.f) w[i] = 0.f;  // assign, not multiply: no -0 and no NaN survives
  }
}

void PrunableSet::set_costs(std::vector<int64_t> per_weight, int64_t other_macs) {
  if (static_cast<int64_t>(per_weight.size()) != size())
    throw UsageError("PrunableSet: " + std::to_string(per_weight.size()) + " costs for " +
                     std::to_string(size()) + " layers");
  for (int64_t l = 0; l < size(); ++l)
    if (per_weight[static_cast<size_t>(l)] < 1)
      throw UsageError("PrunableSet: cost " + std::to_string(per_weight[static_cast<size_t>(l)]) +
                       " of '" + param(l).name + "', expected >= 1");
  if (other_macs < 0)
    throw UsageError("PrunableSet: " + std::to_string(other_macs) + " other multiply-adds");
  costs_ = std::move(per_weight);
  other_macs_ = other_macs;
}

int64_t PrunableSet::dense_macs() const {
  int64_t n = 0;
  for (int64_t l = 0; l < size(); ++l) n += param(l).numel() * cost(l);
  return n;
}

int64_t PrunableSet::remaining_macs() const {
  int64_t n = 0;
  for (int64_t l = 0; l < size(); ++l) n += (param(l).numel() - pruned_count(l)) * cost(l);
  return n;
}

}  // namespace spruce::pruning
