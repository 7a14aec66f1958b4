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

GradientBank gather_columns(Communicator& comm, const GradientBank& mine,
                            const BlockPartition& partition) {
  const int n = comm.size(), me = comm.rank();
  const int64_t d = mine.dim();
  if (static_cast<int>(partition.first_block.size()) != n + 1 || partition.column_start.back() != d)
    throw UsageError("gather_columns: partition of " +
                     std::to_string(partition.column_start.back()) + " weights over " +
                     std::to_string(partition.first_block.size() - 1) + " ranks, bank of " +
                     std::to_string(d) + " weights on " + std::to_string(n));
  const std::vector<int64_t> rows = comm.allgather(mine.rows());
  int64_t m = 0;
  for (int64_t r : rows) m += r;
  const int64_t width = partition.columns(me);
  std::vector<float> out(static_cast<size_t>(m * width));
  std::vector<int64_t> first_row(static_cast<size_t>(n), 0);
  for (int r = 1; r < n; ++r) first_row[r] = first_row[r - 1] + rows[r - 1];
  // My rows of my columns need no message: copied straight into place (a
  // send to itself through MPI would pack them and copy them once more).
  const int64_t own = partition.column_start[me];
  for (int64_t i = 0; i < mine.rows(); ++i)
    std::copy_n(mine.data() + i * d + own, width, out.begin() + (first_row[me] + i) * width);
  std::vector<float> send;
  // Step k: send my rows' columns of rank me + k, receive rank me - k's rows of mine.
  for (int k = 1; k < n; ++k) {
    const int to = (me + k) % n, from = (me - k + n) % n;
    const int64_t c0 = partition.column_start[to], cw = partition.columns(to);
    send.resize(static_cast<size_t>(mine.rows() * cw));
    for (int64_t i = 0; i < mine.rows(); ++i)
      std::copy_n(mine.data() + i * d + c0, cw, send.begin() + i * cw);
    comm.exchange_bytes(send.data(), static_cast<int64_t>(send.size() * sizeof(float)), to,
                        out.data() + first_row[from] * width,
                        rows[from] * width * static_cast<int64_t>(sizeof(float)), from);
  }
  return GradientBank(width, std::move(out));
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
