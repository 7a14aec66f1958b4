// Spreading the block Fisher over ranks (README, "Scaling out with MPI").
// Each rank collects its share of the m gradients (rows of the bank, in rank
// order: rank r holds the samples shard(m, r, N) a single process would draw
// there). The blocks are cut into N contiguous runs of about equal inverse
// memory; rank r owns run r, i.e. the flat weights [column_start[r],
// column_start[r + 1]). An all-to-all, in pieces, then hands each owner
// every sample's gradient entries of its columns, so it can invert and keep
// its blocks alone: inverse memory per rank ~ 1/N of one process's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "../core/communicator.h"
#include "blocks.h"
#include "fisher_gradients.h"
#include "woodbury.h"

namespace spruce::pruning {

/// Which ranks own which blocks: rank r owns blocks [first_block[r],
/// first_block[r + 1]), the flat weights [column_start[r], column_start[r + 1]).
struct BlockPartition {
  std::vector<int64_t> first_block;   // [ranks + 1]
  std::vector<int64_t> column_start;  // [ranks + 1]
  /// Number of weights rank r owns.
  int64_t columns(int r) const { return column_start[r + 1] - column_start[r]; }
  /// column_start as per-rank counts. [ranks]
  std::vector<int64_t> column_counts() const;
};

/// Bytes block_fisher_inverse keeps for a block of n weights and m gradients
/// with `method` (Auto: as it would choose).
int64_t inverse_bytes(int64_t n, int64_t m, InverseMethod method);

/// Cuts `blocks` (tiling [0, d) in order) into `ranks` contiguous runs of
/// about equal inverse_bytes. A rank may own no block when there are fewer
/// blocks than ranks.
BlockPartition partition_blocks(std::span<const Block> blocks, int64_t m, InverseMethod method,
                                int ranks);

/// This rank's share of the block inverse: its blocks of `blocks` (tiling
/// [0, d)), indices counted from partition.column_start[rank], from every
/// rank's rows of the [m, d] bank (`mine` holds this rank's; row order = rank
/// order). The other ranks' rows of its columns arrive in pieces of a few MiB
/// (one pairwise exchange per peer and piece) and each piece is inverted on
/// arrival; its own rows are read in place. So the [m, columns] bank of its
/// columns is never built: no copy of its own rows, no large buffer to fault
/// in. mask: empty or [d]. column_sums: if not null, set to Σ_i g_i over all m
/// rows for this rank's columns, summed in row order as one process would.
/// piece_bytes: the size of a piece's columns over all m rows (tests make it
/// tiny to get many pieces).
BlockInverse distributed_block_inverse(Communicator& comm, const GradientBank& mine,
                                       std::span<const Block> blocks,
                                       const BlockPartition& partition,
                                       const InverseOptions& options, std::span<const float> mask,
                                       std::vector<double>* column_sums = nullptr,
                                       int64_t piece_bytes = int64_t{8} << 20);

/// The whole bank on every rank: every rank's rows, in rank order (for a
/// pruner that is not distributed, e.g. the diagonal Fisher).
GradientBank gather_rows(Communicator& comm, const GradientBank& mine);

}  // namespace spruce::pruning
