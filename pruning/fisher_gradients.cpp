// GradientBank: a growing [m, d] float matrix.
#include "fisher_gradients.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "../core/error.h"

namespace spruce::pruning {

GradientBank::GradientBank(int64_t dim, int64_t reserve_rows) : dim_(dim) {
  if (dim < 0) throw UsageError("GradientBank: negative dimension " + std::to_string(dim));
  data_.reserve(static_cast<size_t>(dim * std::max<int64_t>(reserve_rows, 0)));
}

GradientBank::GradientBank(int64_t dim, std::vector<float> rows)
    : dim_(dim), data_(std::move(rows)) {
  if (dim < 0 || (dim == 0 && !data_.empty()) ||
      (dim > 0 && data_.size() % static_cast<size_t>(dim) != 0))
    throw UsageError("GradientBank: " + std::to_string(data_.size()) + " values are not rows of " +
                     std::to_string(dim));
}

void GradientBank::add(std::span<const float> row) {
  if (static_cast<int64_t>(row.size()) != dim_)
    throw UsageError("GradientBank: gradient of length " + std::to_string(row.size()) +
                     ", expected " + std::to_string(dim_));
  data_.insert(data_.end(), row.begin(), row.end());
}

void GradientBank::add_from_grads(const PrunableSet& set) {
  if (set.numel() != dim_)
    throw UsageError("GradientBank: set of " + std::to_string(set.numel()) + " weights, expected " +
                     std::to_string(dim_));
  const size_t start = data_.size();
  data_.resize(start + static_cast<size_t>(dim_), 0.f);
  for (const auto& p : set.params()) {
    const Tensor& g = p.weight.grad();
    if (!g.defined()) continue;
    if (g.numel() != p.numel())
      throw UsageError("GradientBank: gradient of '" + p.name + "' has shape " +
                       shape_str(g.shape()) + ", weight " + shape_str(p.weight.shape()));
    std::copy_n(g.data(), g.numel(), data_.begin() + static_cast<int64_t>(start) + p.offset);
  }
}

std::span<const float> GradientBank::row(int64_t i) const {
  if (i < 0 || i >= rows())
    throw UsageError("GradientBank: row " + std::to_string(i) + " of " + std::to_string(rows()));
  return {data_.data() + i * dim_, static_cast<size_t>(dim_)};
}

void check_finite_gradients(const GradientBank& grads, const PrunableSet& set,
                            const std::string& who) {
  const int64_t d = grads.dim();
  for (int64_t i = 0; i < grads.rows(); ++i) {
    const float* g = grads.data() + i * d;
    for (int64_t q = 0; q < d; ++q) {
      if (std::isfinite(g[q])) continue;
      const PrunableParam& p = set.param(set.layer_of(q));
      throw NumericalError(
          who + ": Fisher gradient " + std::to_string(i + 1) + " of " +
          std::to_string(grads.rows()) + " is " + (std::isnan(g[q]) ? "NaN" : "Inf") +
          " at weight " + std::to_string(q - p.offset) + " of '" + p.name +
          "'; nothing was pruned (the model or the data overflows: check the weights, "
          "or try a lower learning rate)");
    }
  }
}

}  // namespace spruce::pruning
