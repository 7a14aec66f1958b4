// Spreading the block Fisher over ranks (README, "Scaling out with MPI").
// Each rank collects its share of the m gradients (rows of the bank, in rank
// order: rank r holds the samples shard(m, r, N) a single process would draw
// there). The blocks are cut into N contiguous runs of about equal inverse
// memory; rank r owns run r, i.e. the flat weights [column_start[r],
// column_start[r + 1]). An all-to-all then hands each owner every sample's
// gradient entries of its columns, so it can invert and keep its blocks
// alone: inverse memory per rank ~ 1/N of one process's.
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

/// The columns this rank owns of the whole [m, d] bank whose rows are spread
/// over the ranks (`mine` holds this rank's rows; row order = rank order).
/// Returns [m, partition.columns(rank)].
GradientBank gather_columns(Communicator& comm, const GradientBank& mine,
                            const BlockPartition& partition);

/// The whole bank on every rank: every rank's rows, in rank order (for a
/// pruner that is not distributed, e.g. the diagonal Fisher).
GradientBank gather_rows(Communicator& comm, const GradientBank& mine);

}  // namespace spruce::pruning
