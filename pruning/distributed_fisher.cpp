// Block partition and gradient redistribution over ranks.
#include "distributed_fisher.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../core/error.h"

namespace spruce::pruning {

std::vector<int64_t> BlockPartition::column_counts() const {
  std::vector<int64_t> counts;
  for (size_t r = 0; r + 1 < column_start.size(); ++r)
    counts.push_back(column_start[r + 1] - column_start[r]);
  return counts;
}

int64_t inverse_bytes(int64_t n, int64_t m, InverseMethod method) {
  if (method == InverseMethod::kAuto)
    method = m == 0 ? InverseMethod::kGram : cheapest_method(m, n);
  return method == InverseMethod::kGram ? n * m * static_cast<int64_t>(sizeof(double))
                                        : n * n * static_cast<int64_t>(sizeof(float));
}

BlockPartition partition_blocks(std::span<const Block> blocks, int64_t m, InverseMethod method,
                                int ranks) {
  if (ranks < 1) throw UsageError("partition_blocks: " + std::to_string(ranks) + " ranks");
  const int64_t nb = static_cast<int64_t>(blocks.size());
  std::vector<double> prefix(static_cast<size_t>(nb + 1), 0.0);  // cost of blocks [0, b)
  for (int64_t b = 0; b < nb; ++b)
    prefix[b + 1] = prefix[b] + static_cast<double>(inverse_bytes(blocks[b].size(), m, method) +
                                                    blocks[b].size() * 4);  // + its diagonal
  BlockPartition p;
  p.first_block.push_back(0);
  for (int r = 1; r < ranks; ++r) {
    // The boundary whose prefix cost is nearest to r/N of the total.
    const double target = prefix[nb] * r / ranks;
    int64_t b = std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin();
    if (b > 0 && target - prefix[b - 1] < prefix[b] - target) --b;
    p.first_block.push_back(std::clamp(b, p.first_block.back(), nb));
  }
  p.first_block.push_back(nb);
  for (int64_t b : p.first_block)
    p.column_start.push_back(b < nb ? blocks[b].begin : (nb > 0 ? blocks[nb - 1].end : 0));
  return p;
}

BlockInverse distributed_block_inverse(Communicator& comm, const GradientBank& mine,
                                       std::span<const Block> blocks,
                                       const BlockPartition& partition,
                                       const InverseOptions& options, std::span<const float> mask,
                                       std::vector<double>* column_sums, int64_t piece_bytes) {
  const int n = comm.size(), me = comm.rank();
  const int64_t d = mine.dim();
  if (static_cast<int>(partition.first_block.size()) != n + 1 ||
      partition.column_start.back() != d || partition.first_block.back() != std::ssize(blocks))
    throw UsageError("distributed_block_inverse: partition of " +
                     std::to_string(partition.column_start.back()) + " weights over " +
                     std::to_string(partition.first_block.size() - 1) + " ranks, bank of " +
                     std::to_string(d) + " weights on " + std::to_string(n));
  if (!mask.empty() && std::ssize(mask) != d)
    throw UsageError("distributed_block_inverse: mask of " + std::to_string(mask.size()) +
                     " entries for " + std::to_string(d) + " weights");
  const std::vector<int64_t> rows = comm.allgather(mine.rows());
  int64_t m = 0;
  std::vector<int64_t> first_row;  // of each rank, in the whole bank
  for (int64_t r : rows) {
    first_row.push_back(m);
    m += r;
  }
  const int64_t c0 = partition.column_start[me], width = partition.columns(me);
  const int64_t fb = partition.first_block[me];
  std::vector<Block> owned(blocks.begin() + fb, blocks.begin() + partition.first_block[me + 1]);
  for (Block& b : owned) {
    b.begin -= c0;
    b.end -= c0;
  }
  BlockInverseBuilder builder(m, width, std::move(owned), options,
                              mask.empty() ? mask : mask.subspan(c0, width));

  // Every rank cuts its blocks into the same number of pieces (so the
  // exchanges pair up), of about piece_bytes for all m rows: buffers of a few
  // MiB, reused and warm in cache, instead of faulting in a fresh [m, width]
  // bank (that cost each rank ~0.1 s at m = 400 and 134k columns: more than
  // moving the data), and still few messages.
  if (piece_bytes < 1)
    throw UsageError("distributed_block_inverse: pieces of " + std::to_string(piece_bytes) +
                     " bytes");
  int64_t widest = 0;
  for (int r = 0; r < n; ++r) widest = std::max(widest, partition.columns(r));
  const int64_t bytes = widest * m * static_cast<int64_t>(sizeof(float));
  const int64_t pieces = std::max<int64_t>(1, (bytes + piece_bytes - 1) / piece_bytes);
  struct Piece {
    int64_t b0, b1, col, cols;  // blocks [b0, b1), weights [col, col + cols)
  };
  const auto piece = [&](int r, int64_t j) {
    const int64_t f = partition.first_block[r], nb = partition.first_block[r + 1] - f;
    Piece p{f + nb * j / pieces, f + nb * (j + 1) / pieces, 0, 0};
    if (p.b0 < p.b1) {
      p.col = blocks[p.b0].begin;
      p.cols = blocks[p.b1 - 1].end - p.col;
    }
    return p;
  };
  // Buffers for one piece, sized once for the largest.
  int64_t most_sent = 0, most_received = 0;
  for (int64_t j = 0; j < pieces; ++j)
    for (int r = 0; r < n; ++r) {
      int64_t& most = r == me ? most_received : most_sent;
      most = std::max(most, piece(r, j).cols);
    }
  std::vector<float> send(static_cast<size_t>(mine.rows() * most_sent)),
      received(static_cast<size_t>((m - mine.rows()) * most_received));
  std::vector<int64_t> received_row(static_cast<size_t>(n));  // first row of rank r in `received`
  for (int r = 0, at = 0; r < n; ++r) {
    received_row[r] = at;
    if (r != me) at += rows[r];
  }
  std::vector<const float*> row_at(static_cast<size_t>(m));
  if (column_sums != nullptr) column_sums->assign(static_cast<size_t>(width), 0.0);

  for (int64_t j = 0; j < pieces; ++j) {
    const Piece mp = piece(me, j);
    // Step k: send my rows of rank me + k's piece, receive rank me − k's rows of mine.
    for (int k = 1; k < n; ++k) {
      const int to = (me + k) % n, from = (me - k + n) % n;
      const Piece tp = piece(to, j);
      for (int64_t i = 0; i < mine.rows(); ++i)
        std::copy_n(mine.data() + i * d + tp.col, tp.cols, send.begin() + i * tp.cols);
      comm.exchange_bytes(send.data(), mine.rows() * tp.cols * static_cast<int64_t>(sizeof(float)),
                          to, received.data() + received_row[from] * mp.cols,
                          rows[from] * mp.cols * static_cast<int64_t>(sizeof(float)), from);
    }
    if (mp.b0 == mp.b1) continue;
    for (int r = 0; r < n; ++r)
      for (int64_t i = 0; i < rows[r]; ++i)
        row_at[first_row[r] + i] = r == me ? mine.data() + i * d + mp.col
                                           : received.data() + (received_row[r] + i) * mp.cols;
    if (column_sums != nullptr)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t q = 0; q < mp.cols; ++q) (*column_sums)[mp.col - c0 + q] += row_at[i][q];
    builder.add(mp.b0 - fb, mp.b1 - fb, row_at);
  }
  return std::move(builder).finish();
}

GradientBank gather_rows(Communicator& comm, const GradientBank& mine) {
  const int64_t d = mine.dim();
  const std::vector<int64_t> rows = comm.allgather(mine.rows());
  int64_t m = 0;
  std::vector<int64_t> counts;
  for (int64_t r : rows) {
    m += r;
    counts.push_back(r * d);
  }
  std::vector<float> all(static_cast<size_t>(m * d));
  int64_t before = 0;
  for (int r = 0; r < comm.rank(); ++r) before += rows[r];
  std::copy_n(mine.data(), mine.rows() * d, all.begin() + before * d);
  comm.allgather_in_place(std::span<float>(all), counts);
  return GradientBank(d, std::move(all));
}

}  // namespace spruce::pruning
