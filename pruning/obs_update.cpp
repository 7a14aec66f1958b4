// OBS updates, block by block.
#include "obs_update.h"

#include <algorithm>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../core/parallel.h"
#include "block_parallel.h"

namespace spruce::pruning {
namespace {

/// first[b] .. first[b+1]: the entries of `prune` that fall in block b.
std::vector<size_t> split_by_block(const BlockInverse& inv, std::span<const int64_t> prune) {
  for (size_t i = 0; i < prune.size(); ++i) {
    if (prune[i] < 0 || prune[i] >= inv.dim())
      throw UsageError("obs_update: index " + std::to_string(prune[i]) + " outside [0, " +
                       std::to_string(inv.dim()) + ")");
    if (i > 0 && prune[i] <= prune[i - 1])
      throw UsageError("obs_update: indices must be ascending and distinct");
  }
  std::vector<size_t> first;
  for (const Block& b : inv.blocks())
    first.push_back(
        static_cast<size_t>(std::lower_bound(prune.begin(), prune.end(), b.begin) - prune.begin()));
  first.push_back(prune.size());
  return first;
}

void check_sizes(std::span<float> w, const BlockInverse& inv, std::span<double> loss) {
  if (static_cast<int64_t>(w.size()) != inv.dim())
    throw UsageError("obs_update: " + std::to_string(w.size()) + " weights, inverse covers " +
                     std::to_string(inv.dim()));
  for (const Block& b : inv.blocks())
    if (b.layer < 0 || b.layer >= static_cast<int64_t>(loss.size()))
      throw UsageError("obs_update: block of layer " + std::to_string(b.layer) + " but " +
                       std::to_string(loss.size()) + " loss entries");
}

/// Runs fn(block, Q indices, out per-block loss) for every block with work,
/// then adds the per-block losses into loss[layer] in block order.
template <class Fn>
void per_block(const BlockInverse& inv, std::span<const int64_t> prune, std::span<double> loss,
               Fn fn) {
  const std::vector<size_t> first = split_by_block(inv, prune);
  std::vector<double> block_loss(static_cast<size_t>(inv.num_blocks()), 0.0);
  for_each_block(inv.num_blocks(), [&](int64_t b, int) {
    const auto q = prune.subspan(first[b], first[b + 1] - first[b]);
    if (!q.empty()) block_loss[b] = fn(b, q);
  });
  for (int64_t b = 0; b < inv.num_blocks(); ++b) loss[inv.blocks()[b].layer] += block_loss[b];
}

}  // namespace

void obs_update_exact(std::span<float> w, const BlockInverse& inv, std::span<const int64_t> prune,
                      std::span<double> loss) {
  check_sizes(w, inv, loss);
  per_block(inv, prune, loss, [&](int64_t b, std::span<const int64_t> q_idx) {
    const Block blk = inv.blocks()[b];
    const int64_t n = blk.size();
    const int q = static_cast<int>(q_idx.size());
    std::vector<int64_t> local(q_idx.size());
    std::vector<double> y(q);
    for (int r = 0; r < q; ++r) {
      local[r] = q_idx[r] - blk.begin;
      y[r] = w[q_idx[r]];
    }
    inv.solve(b, local, y.data());  // y = (A_QQ)⁻¹ w_Q
    double predicted = 0.0;
    for (int r = 0; r < q; ++r) predicted += 0.5 * w[q_idx[r]] * y[r];
    std::vector<double> delta(static_cast<size_t>(n));  // A_{:,Q} y = −δ
    inv.multiply(b, local, y.data(), delta.data());
    for (int64_t j = 0; j < n; ++j)
      w[blk.begin + j] = static_cast<float>(w[blk.begin + j] - delta[j]);
    for (int64_t i : q_idx) w[i] = 0.f;
    return predicted;
  });
}

void obs_update_summed(std::span<float> w, const BlockInverse& inv, std::span<const int64_t> prune,
                       double scale, std::span<double> loss) {
  check_sizes(w, inv, loss);
  const std::vector<float>& diag = inv.diagonal();
  per_block(inv, prune, loss, [&](int64_t b, std::span<const int64_t> q_idx) {
    const Block blk = inv.blocks()[b];
    const int64_t n = blk.size();
    std::vector<int64_t> local(q_idx.size());
    std::vector<double> v(q_idx.size());  // v_q = −w_q / A_qq
    double rho_sum = 0.0;
    for (size_t r = 0; r < q_idx.size(); ++r) {
      const int64_t i = q_idx[r];
      local[r] = i - blk.begin;
      v[r] = -static_cast<double>(w[i]) / diag[i];
      rho_sum += 0.5 * static_cast<double>(w[i]) * w[i] / diag[i];
    }
    std::vector<double> delta(static_cast<size_t>(n));  // A v
    inv.multiply(b, local, v.data(), delta.data());
    for (int64_t j = 0; j < n; ++j)
      w[blk.begin + j] = static_cast<float>(w[blk.begin + j] + scale * delta[j]);
    for (int64_t i : q_idx) w[i] = 0.f;
    return rho_sum;
  });
}

void fisher_quadratic(std::span<const float> before, std::span<const float> after,
                      const GradientBank& grads, std::span<const Block> blocks, double damp,
                      std::span<const float> mask, std::span<double> loss) {
  const int64_t d = grads.dim(), m = grads.rows();
  if (static_cast<int64_t>(before.size()) != d || static_cast<int64_t>(after.size()) != d ||
      (!mask.empty() && static_cast<int64_t>(mask.size()) != d))
    throw UsageError("fisher_quadratic: vectors of " + std::to_string(before.size()) + ", " +
                     std::to_string(after.size()) + " and " + std::to_string(mask.size()) +
                     " entries for " + std::to_string(d) + " weights");
  const int64_t nb = static_cast<int64_t>(blocks.size());
  for (const Block& b : blocks)
    if (b.begin < 0 || b.end > d || b.layer < 0 || b.layer >= static_cast<int64_t>(loss.size()))
      throw UsageError("fisher_quadratic: block [" + std::to_string(b.begin) + ", " +
                       std::to_string(b.end) + ") of layer " + std::to_string(b.layer) +
                       " does not fit " + std::to_string(d) + " weights and " +
                       std::to_string(loss.size()) + " layers");
  std::vector<double> block_loss(static_cast<size_t>(nb), 0.0);
  // No BLAS inside: plain parallel_for over blocks.
  parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    std::vector<double> delta;
    for (int64_t b = b0; b < b1; ++b) {
      const Block blk = blocks[b];
      delta.assign(static_cast<size_t>(blk.size()), 0.0);
      bool moved = false;
      for (int64_t j = 0; j < blk.size(); ++j) {
        const int64_t i = blk.begin + j;
        delta[j] = static_cast<double>(after[i]) - before[i];
        moved = moved || delta[j] != 0.0;
      }
      if (!moved) continue;
      double dd = 0.0;
      for (double v : delta) dd += v * v;
      if (!mask.empty())  // masked gradient entries are zero: drop them from gᵀδ
        for (int64_t j = 0; j < blk.size(); ++j)
          if (mask[blk.begin + j] == 0.f) delta[j] = 0.0;
      double gd2 = 0.0;  // Σ_i (g_iᵀ δ)²
      for (int64_t s = 0; s < m; ++s) {
        const float* g = grads.data() + s * d + blk.begin;
        double gd = 0.0;
        for (int64_t j = 0; j < blk.size(); ++j) gd += g[j] * delta[j];
        gd2 += gd * gd;
      }
      block_loss[b] = 0.5 * (damp * dd + (m > 0 ? gd2 / m : 0.0));
    }
  });
  for (int64_t b = 0; b < nb; ++b) loss[blocks[b].layer] += block_loss[b];
}

}  // namespace spruce::pruning
