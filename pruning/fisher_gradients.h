// GradientBank: the m gradients g_1..g_m of the empirical Fisher
// F = λI + (1/m) Σ_i g_i g_iᵀ (pruning/README.md, "Empirical Fisher"), stored as one
// row-major float matrix [m, d]: row i is g_i concatenated over the layers of
// a PrunableSet, in the set's order.
//
// This file only holds them; collecting them from a model and a data loader
// (eval mode, one mini-batch per row) is the caller's job: after each
// backward, add_from_grads(set) appends the current .grad() of every weight.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "prunable_set.h"

namespace spruce::pruning {

class GradientBank {
 public:
  /// An empty bank for gradients of length `dim`. Reserve the expected row
  /// count up front: m·d floats can be a gigabyte, and growing would copy it.
  explicit GradientBank(int64_t dim, int64_t reserve_rows = 0);
  /// A bank that takes over `rows`, row-major [rows.size() / dim, dim].
  GradientBank(int64_t dim, std::vector<float> rows);

  /// Appends one gradient. row: [dim]
  void add(std::span<const float> row);
  /// Appends the concatenated .grad() of the set's weights (zeros for a weight
  /// without a gradient). The set's numel() must equal dim().
  void add_from_grads(const PrunableSet& set);
  void clear() { data_.clear(); }

  /// m, the number of gradients stored.
  int64_t rows() const { return dim_ == 0 ? 0 : static_cast<int64_t>(data_.size()) / dim_; }
  /// d, the length of each gradient.
  int64_t dim() const { return dim_; }
  /// The whole matrix, row-major. [rows(), dim()]
  const float* data() const { return data_.data(); }
  /// Gradient i. [dim()]
  std::span<const float> row(int64_t i) const;

 private:
  int64_t dim_;
  std::vector<float> data_;
};

/// Throws spruce::Error naming `who`, the first gradient and the layer of
/// `set` holding a NaN or Inf entry: a pruner fed such a Fisher would write
/// NaN weights or choose its mask from garbage. The bank must be over `set`.
void check_finite_gradients(const GradientBank& grads, const PrunableSet& set,
                            const std::string& who);

}  // namespace spruce::pruning
