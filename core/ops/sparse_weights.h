// Compressed weights for the sparse inference kernels (sparse_conv2d.h), the
// cache that keeps them current, and the rule that picks sparse or dense.
//
// Layout: a weight viewed as rows x cols (conv: C_out x C_in KH KW, linear:
// out x in) keeps, per row, its nonzero values and their column indices, CSR
// style. The kernels turn a column into an input offset once per input
// geometry, so the inner loop is one offset load, one broadcast and a few
// FMAs per nonzero. (A bitmask + values layout would add a bit scan per
// nonzero to that loop; it is what the sparse model file stores instead,
// where size matters and speed does not.)
//
// Staleness: the cache keys the compressed copy on the content versions
// (core/tensor.h) of the weight and of its elementwise multiplier (a pruning
// mask, for core just "another tensor the weight is multiplied by"). Any
// mutable access to either -- an optimizer step, a load, a new mask, a fill --
// changes the version, and the next call recompresses. Nothing here knows
// what the multiplier means.
#pragma once

#include <cstdint>
#include <vector>

#include "../tensor.h"

namespace spruce::ops {

/// weight (x multiplier) as rows of nonzeros.
struct SparseRows {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> start;  // [rows + 1]: row r is [start[r], start[r + 1])
  std::vector<int32_t> col;    // [nnz] column of each nonzero
  std::vector<float> value;    // [nnz]
  int64_t nnz() const { return static_cast<int64_t>(value.size()); }
  /// Nonzeros / (rows x cols); 1 for an empty weight.
  double density() const;
};

/// The nonzeros of weight * multiplier (multiplier undefined = 1), weight
/// viewed as [size(0), numel / size(0)]. Products that are exactly 0 are
/// dropped (so are -0 and pruned weights).
SparseRows compress_rows(const Tensor& weight, const Tensor& multiplier = Tensor());

/// Which kernels layers use in inference (eval mode, no graph recorded).
enum class SparseMode {
  kAuto,    // sparse when the density is at most sparse_max_density() (default)
  kDense,   // always the dense kernels (a bench's baseline)
  kSparse,  // always the sparse kernels (tests: every density through them)
};
void set_sparse_mode(SparseMode mode);
SparseMode sparse_mode();

/// The default crossover of kAuto (linear layers): a layer runs sparse when
/// its density (nonzeros / weights) is at most this. Convs pass their own,
/// by geometry (sparse_conv2d.h, sparse_conv_max_density).
inline constexpr double kSparseMaxDensity = 0.3;

/// The compressed form of weight x multiplier, recompressed whenever either
/// tensor's contents changed since the last call (never stale), and whether
/// the layer should run sparse. One per layer; not thread-safe (a layer's
/// forward is not called concurrently).
class SparseWeightCache {
 public:
  /// The current compressed weights; recompresses first if needed.
  const SparseRows& get(const Tensor& weight, const Tensor& multiplier);
  /// Whether inference should use the sparse kernels for this weight now
  /// (mode, then density against max_density).
  bool use_sparse(const Tensor& weight, const Tensor& multiplier,
                  double max_density = kSparseMaxDensity);
  /// How many times the weights were compressed (tests).
  int64_t compressions() const { return compressions_; }

  /// Per-input-geometry data the kernels derive from the rows (input
  /// offsets of every nonzero) and the output grid's map (sparse_spmm.h,
  /// GridMap), cached beside them and dropped with them.
  struct Derived {
    int64_t key[4] = {-1, -1, -1, -1};
    std::vector<int32_t> offset;  // [nnz]
    std::vector<uint16_t> keep;   // [grid blocks]
    std::vector<int32_t> at;      // [grid blocks]
  };
  Derived& derived() { return derived_; }

 private:
  ContentVersion weight_version_, multiplier_version_;
  bool valid_ = false;
  int64_t compressions_ = 0;
  SparseRows rows_;
  Derived derived_;
};

}  // namespace spruce::ops
