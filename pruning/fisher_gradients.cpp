// GradientBank: a growing [m, d] float matrix.
#include "fisher_gradients.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace spruce::pruning {

GradientBank::GradientBank(int64_t dim, int64_t reserve_rows) : dim_(dim) {
  if (dim < 0)
    throw std::invalid_argument("GradientBank: negative dimension " + std::to_string(dim));
  data_.reserve(static_cast<size_t>(dim * std::max<int64_t>(reserve_rows, 0)));
}

GradientBank::GradientBank(int64_t dim, std::vector<float> rows)
    : dim_(dim), data_(std::move(rows)) {
  if (dim < 0 || (dim == 0 && !data_.empty()) ||
      (dim > 0 && data_.size() % static_cast<size_t>(dim) != 0))
    throw std::invalid_argument("GradientBank: " + std::to_string(data_.size()) +
                                " values are not rows of " + std::to_string(dim));
}

void GradientBank::add(std::span<const float> row) {
  if (static_cast<int64_t>(row.size()) != dim_)
    throw std::invalid_argument("GradientBank: gradient of length " + std::to_string(row.size()) +
                                ", expected " + std::to_string(dim_));
  data_.insert(data_.end(), row.begin(), row.end());
}

void GradientBank::add_from_grads(const PrunableSet& set) {
  if (set.numel() != dim_)
    throw std::invalid_argument("GradientBank: set of " + std::to_string(set.numel()) +
                                " weights, expected " + std::to_string(dim_));
  const size_t start = data_.size();
  data_.resize(start + static_cast<size_t>(dim_), 0.f);
  for (const auto& p : set.params()) {
    const Tensor& g = p.weight.grad();
    if (!g.defined()) continue;
    if (g.numel() != p.numel())
      throw std::invalid_argument("GradientBank: gradient of '" + p.name + "' has shape " +
                                  shape_str(g.shape()) + ", weight " + shape_str(p.weight.shape()));
    std::copy_n(g.data(), g.numel(), data_.begin() + static_cast<int64_t>(start) + p.offset);
  }
}

std::span<const float> GradientBank::row(int64_t i) const {
  if (i < 0 || i >= rows())
    throw std::out_of_range("GradientBank: row " + std::to_string(i) + " of " +
                            std::to_string(rows()));
  return {data_.data() + i * dim_, static_cast<size_t>(dim_)};
}

}  // namespace spruce::pruning
