// Block-diagonal inverse of the damped empirical Fisher (pruning/README.md,
// "Woodbury recursion", "Fast forms (BLAS-3)", "Blocks"). For every block b,
//
//   F_b = λI + (1/m) Σ_i g_{i,b} g_{i,b}ᵀ          (n × n, n <= c)
//
// with G = [g_1 … g_m] restricted to the block (n × m). The definition is the
// rank-1 Woodbury recursion F_0⁻¹ = λ⁻¹I, u = F⁻¹g_i,
// F⁻¹ ← F⁻¹ − uuᵀ/(m + g_iᵀu) (woodbury_rank1_inverse, the reference). The
// library computes the same matrix with BLAS-3 work in double precision (λ is
// tiny next to GGᵀ/m: float32 would lose it), by one of:
//
//   Direct     F = λI + GGᵀ/m by syrk, inverse by Cholesky.     ~ n²m/2 + n³/2
//   Recursion  k gradients at a time (G_k: n×k),                 ~ 3n²m/2
//              F⁻¹ ← F⁻¹ − F⁻¹G_k (mI_k + G_kᵀF⁻¹G_k)⁻¹ G_kᵀF⁻¹
//   Gram       F⁻¹ = λ⁻¹(I − G(mλI_m + GᵀG)⁻¹Gᵀ) = λ⁻¹(I − BBᵀ),  ~ m²n + m³/6
//              B = G L⁻ᵀ with LLᵀ = mλI_m + GᵀG (n × m).
//
// Direct and Recursion blocks are stored dense, as float [n, n]. Gram blocks
// are stored as their factor B (double [n, m]): when m < n that is the same
// inverse in less memory (n·m instead of n²) and it is never expanded, which
// makes large blocks with few gradients (c = 1000, m = 100) an order of
// magnitude cheaper. Memory stays O(min(c, m)·d). Auto picks Gram when
// 2m <= n (cheaper and smaller), else Direct. Consumers go through the
// representation-neutral accessors below (diagonal, gather, multiply).
//
// Numerical trouble (README, "Reliability guarantees"). λ must lie in
// [1e-30, 1e30], so that 1/λ and λ are finite floats. A block whose λ is
// below kDampFloor × its largest Fisher diagonal entry max_q (GGᵀ/m)_qq is
// damped with λ_b = kDampFloor × that entry instead: below it, F_b is
// numerically singular (duplicated samples, a tiny λ) and the Gram form
// would lose every digit of 1 − ‖B_q‖² to cancellation. The blocks where
// that happened are listed by raised_blocks() for the caller to warn about.
// A block with all-zero gradients (or all weights pruned) is exactly λI.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.h"
#include "blocks.h"
#include "fisher_gradients.h"

namespace spruce::pruning {

enum class InverseMethod { kAuto, kDirect, kGram, kRecursion };

/// The accepted range of the damping λ.
inline constexpr double kMinDamp = 1e-30, kMaxDamp = 1e30;
/// A block's λ_b is at least this × its largest Fisher diagonal entry: it
/// bounds the condition number of F_b by ~n / kDampFloor.
inline constexpr double kDampFloor = 1e-10;

struct InverseOptions {
  double damp = 1e-5;  // λ > 0
  InverseMethod method = InverseMethod::kAuto;
  int64_t chunk = 32;  // k, gradients per Recursion step (>= 1)
  /// Damping that follows the Fisher's scale: block b gets
  /// λ_b = λ + relative_damp · mean_q (GGᵀ/m)_qq over its weights (0 = off).
  double relative_damp = 0.0;
};

/// F_b⁻¹ for a partition of w into blocks, each dense or factored.
class BlockInverse {
 public:
  BlockInverse() = default;

  const std::vector<Block>& blocks() const { return blocks_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  /// d, the number of weights covered.
  int64_t dim() const { return blocks_.empty() ? 0 : blocks_.back().end; }
  /// The requested λ.
  double damp() const { return damp_; }
  /// λ_b, the damping block b was inverted with (>= damp(); with relative
  /// damping, λ + relative_damp · its mean Fisher diagonal entry, or the floor).
  double block_damp(int64_t b) const { return block_damp_[static_cast<size_t>(b)]; }
  /// The blocks whose λ_b had to be raised to the floor, in order.
  std::vector<int64_t> raised_blocks() const;
  /// Whether block b is kept as its Woodbury factor B (else dense).
  bool factored(int64_t b) const { return factored_[static_cast<size_t>(b)] != 0; }
  /// [F⁻¹]_qq for every flat index q. [d]
  const std::vector<float>& diagonal() const { return diag_; }

  /// [F_b⁻¹]_{QQ} for local indices idx (0 <= idx < n_b), in double. out: [q, q]
  void gather(int64_t b, std::span<const int64_t> idx, double* out) const;
  /// Solves [F_b⁻¹]_{QQ} y = rhs for local indices idx, in place, in double
  /// (Cholesky; for a factored block with q > m, the m×m Woodbury form
  /// λ(I + B_Q(I − B_QᵀB_Q)⁻¹B_Qᵀ)). rhs: [q]. Throws spruce::Error if the
  /// system is not numerically positive definite.
  void solve(int64_t b, std::span<const int64_t> idx, double* rhs) const;
  /// out = F_b⁻¹[:, idx] · y, in double. y: [q], out: [n_b]
  void multiply(int64_t b, std::span<const int64_t> idx, const double* y, double* out) const;
  /// The whole F_b⁻¹, expanded (tests, inspection). [n_b, n_b] row-major
  std::vector<float> dense(int64_t b) const;
  /// Bytes held by the inverses (dense blocks, factors and the diagonal).
  int64_t memory_bytes() const;

 private:
  friend class BlockInverseBuilder;
  std::vector<Block> blocks_;
  double damp_ = 0.0;
  std::vector<double> block_damp_;  // λ_b per block
  std::vector<char> raised_;        // 1 where λ_b was raised to the floor
  int64_t rank_ = 0;                // m, the columns of every factor
  std::vector<uint8_t> factored_;   // per block
  std::vector<int64_t> offset_;     // per block: start in dense_ or factor_
  std::vector<float> dense_;        // dense blocks, row-major [n, n] each
  std::vector<double> factor_;      // factored blocks, B row-major [n, m] each
  std::vector<float> diag_;         // [d]
};

/// Builds a BlockInverse a run of blocks at a time, for a caller that holds
/// the gradients of only some weights at once (the distributed inverse,
/// pruning/distributed_fisher.h, receives them piece by piece).
/// block_fisher_inverse is construct, add every block, finish.
class BlockInverseBuilder {
 public:
  /// Checks what block_fisher_inverse checks (blocks tiling [0, d), mask
  /// empty or [d]) and allocates the inverse for m gradients. The mask must
  /// outlive the builder.
  BlockInverseBuilder(int64_t m, int64_t d, std::vector<Block> blocks,
                      const InverseOptions& options, std::span<const float> mask);
  int64_t num_blocks() const { return inv_.num_blocks(); }
  const std::vector<Block>& blocks() const { return inv_.blocks(); }
  /// Inverts blocks [b0, b1). rows[i] points at gradient i's entry for weight
  /// blocks[b0].begin; its entries up to blocks[b1 − 1].end are read. rows: [m]
  void add(int64_t b0, int64_t b1, std::span<const float* const> rows);
  /// The inverse, once every block was added; throws as block_fisher_inverse.
  BlockInverse finish() &&;

 private:
  BlockInverse inv_;
  InverseOptions options_;
  std::span<const float> mask_;
};

/// F_b⁻¹ for every block, from the bank's m gradients (m = grads.rows()).
/// Blocks must tile [0, d) in order. mask: empty, or [d] with 0 for pruned
/// weights, whose gradient entries are taken as zero (they then decouple:
/// row and column q of F⁻¹ become e_q/λ). Throws UsageError on bad
/// options or sizes (λ outside [kMinDamp, kMaxDamp]), spruce::Error when a
/// block is still not positive definite or the diagonal of F⁻¹ is not a
/// positive float (gradients so large that 1/F_qq underflows).
BlockInverse block_fisher_inverse(const GradientBank& grads, std::vector<Block> blocks,
                                  const InverseOptions& options, std::span<const float> mask = {});

/// The method Auto uses for a block of n weights and m gradients.
InverseMethod cheapest_method(int64_t m, int64_t n);

/// The definition, kept as the reference: the plain rank-1 Woodbury
/// recursion in double. gt: [m, n] with row stride ld. Returns F⁻¹ [n, n].
std::vector<double> woodbury_rank1_inverse(const float* gt, int64_t m, int64_t n, int64_t ld,
                                           double damp);

}  // namespace spruce::pruning
