// WoodFisher pruning: the block inverse, ρ and the OBS update wired together,
// in one process or spread over ranks.
#include "woodfisher_pruner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>

#include "../core/error.h"
#include "../core/warning.h"

namespace spruce::pruning {
namespace {

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// Σ_i g_i over the bank's rows, in row order.
std::vector<double> column_sums(const GradientBank& grads) {
  std::vector<double> sums(static_cast<size_t>(grads.dim()), 0.0);
  for (int64_t i = 0; i < grads.rows(); ++i) {
    const std::span<const float> g = grads.row(i);
    for (size_t q = 0; q < sums.size(); ++q) sums[q] += g[q];
  }
  return sums;
}

}  // namespace

void WoodFisherPruner::prepare(const PrunableSet& set, const GradientBank* grads,
                               const FisherOptions& fisher) {
  if (grads == nullptr || grads->dim() != set.numel())
    throw UsageError(name() + ": needs gradients of length " + std::to_string(set.numel()));
  check_finite_gradients(*grads, set, name());
  fisher_ = fisher;
  if (comm_ != nullptr) return prepare_distributed(set, *grads);
  grads_ = grads;
  total_rows_ = grads->rows();
  first_ = 0;
  mask_ = set.flat_mask();
  inverse_ = block_fisher_inverse(
      *grads, make_blocks(set.layer_sizes(), fisher.block_size),
      {fisher.damp, options_.method, options_.chunk, fisher.relative_damp}, mask_);
  warn_raised_damping(set);
  compute_newton_step(options_.first_order ? column_sums(*grads) : std::vector<double>{},
                      total_rows_);
}

void WoodFisherPruner::compute_newton_step(std::vector<double> column_sums, int64_t m) {
  mean_grad_.clear();
  newton_.clear();
  if (!options_.first_order) return;
  const int64_t d = inverse_.dim();
  mean_grad_ = std::move(column_sums);
  for (int64_t q = 0; q < d; ++q)
    mean_grad_[q] =
        mask_.empty() || mask_[first_ + q] != 0.f
            ? fisher_.taylor_scale * mean_grad_[q] / static_cast<double>(std::max<int64_t>(m, 1))
            : 0.0;
  newton_.assign(static_cast<size_t>(d), 0.0);
  std::vector<int64_t> all;
  for (int64_t b = 0; b < inverse_.num_blocks(); ++b) {
    const Block& block = inverse_.blocks()[b];
    all.resize(static_cast<size_t>(block.size()));
    std::iota(all.begin(), all.end(), int64_t{0});
    inverse_.multiply(b, all, mean_grad_.data() + block.begin, newton_.data() + block.begin);
  }
}

void WoodFisherPruner::add_first_order(std::span<const float> before, std::span<const float> after,
                                       LossPrediction& out) const {
  for (const Block& block : inverse_.blocks()) {
    double gain = 0.0, linear = 0.0;
    for (int64_t q = block.begin; q < block.end; ++q) {
      gain += mean_grad_[q] * newton_[q];
      linear += mean_grad_[q] * (static_cast<double>(after[q]) - before[q]);
    }
    out.predicted[static_cast<size_t>(block.layer)] -= 0.5 * gain;
    out.quadratic[static_cast<size_t>(block.layer)] += linear;
  }
}

void WoodFisherPruner::warn_raised_damping(const PrunableSet& set) const {
  const std::vector<int64_t> raised = inverse_.raised_blocks();
  if (raised.empty()) return;
  double highest = 0.0;
  std::string layers;
  int64_t last_layer = -1;
  for (int64_t b : raised) {
    highest = std::max(highest, inverse_.block_damp(b));
    const int64_t layer = inverse_.blocks()[b].layer;
    if (layer == last_layer) continue;
    layers += (layers.empty() ? "'" : ", '") + set.param(layer).name + "'";
    last_layer = layer;
  }
  warn(name() + ": λ = " + format_number(inverse_.damp()) + " leaves " +
       std::to_string(raised.size()) + " of " + std::to_string(inverse_.num_blocks()) +
       " Fisher blocks numerically singular (in " + layers + "); they were damped with up to λ = " +
       format_number(highest) + " (1e-10 x their largest Fisher diagonal entry) instead");
}

void WoodFisherPruner::prepare_distributed(const PrunableSet& set, const GradientBank& mine) {
  blocks_ = make_blocks(set.layer_sizes(), fisher_.block_size);
  total_rows_ = 0;
  for (int64_t rows : comm_->allgather(mine.rows())) total_rows_ += rows;
  partition_ = partition_blocks(blocks_, total_rows_, options_.method, comm_->size());
  first_ = partition_.column_start[comm_->rank()];
  grads_ = &mine;
  mask_ = set.flat_mask();
  inverse_ = BlockInverse();  // free the last step's inverse before building the new one
  std::vector<double> sums;
  inverse_ = distributed_block_inverse(
      *comm_, mine, blocks_, partition_,
      {fisher_.damp, options_.method, options_.chunk, fisher_.relative_damp}, mask_,
      options_.first_order ? &sums : nullptr);
  warn_raised_damping(set);
  compute_newton_step(std::move(sums), total_rows_);
}

void WoodFisherPruner::check_prepared(const PrunableSet& set) const {
  const int64_t covered = comm_ != nullptr ? partition_.column_start.back() : inverse_.dim();
  if (grads_ == nullptr || covered != set.numel())
    throw UsageError(name() + ": prepare() was not called for a set of " +
                     std::to_string(set.numel()) + " weights");
}

std::vector<double> WoodFisherPruner::scores(const PrunableSet& set) const {
  check_prepared(set);
  const std::vector<float> w = set.flat_weights();
  const std::vector<float>& diag = inverse_.diagonal();
  std::vector<double> rho(w.size());
  for (size_t j = 0; j < diag.size(); ++j) {
    const size_t q = static_cast<size_t>(first_) + j;
    const double u = options_.first_order ? w[q] - newton_[j] : w[q];
    rho[q] = u * u / (2.0 * diag[j]);
  }
  if (comm_ != nullptr)
    comm_->allgather_in_place(std::span<double>(rho), partition_.column_counts());
  return rho;
}

LossPrediction WoodFisherPruner::update(PrunableSet& set, std::span<const int64_t> prune) {
  check_prepared(set);
  const std::vector<float> start = set.flat_weights();
  std::vector<float> all = start;
  const int64_t width = inverse_.dim();
  // This rank's weights and the pruned indices among them, counted from first_.
  const std::vector<float> before(all.begin() + first_, all.begin() + first_ + width);
  std::vector<float> w = before;
  std::vector<int64_t> local;
  for (int64_t q : prune)
    if (q >= first_ && q < first_ + width) local.push_back(q - first_);
  LossPrediction out{std::vector<double>(static_cast<size_t>(set.size()), 0.0),
                     std::vector<double>(static_cast<size_t>(set.size()), 0.0)};
  // WoodTaylor: the Newton step first, then OBS from w − a (whose pruned
  // entries are the u of the statistic).
  if (options_.first_order)
    for (size_t q = 0; q < w.size(); ++q) w[q] = static_cast<float>(w[q] - newton_[q]);
  const bool interpolate = options_.update_scale != 1.0 &&
                           (options_.update == ObsUpdate::kExact || options_.first_order);
  if (options_.update == ObsUpdate::kExact)
    obs_update_exact(w, inverse_, local, out.predicted);
  else
    obs_update_summed(w, inverse_, local, interpolate ? 1.0 : options_.update_scale, out.predicted);
  // A partial step along the full update; the pruned weights stay exactly 0.
  if (interpolate) {
    for (size_t q = 0; q < w.size(); ++q)
      w[q] = before[q] + static_cast<float>(options_.update_scale) * (w[q] - before[q]);
    for (int64_t q : local) w[static_cast<size_t>(q)] = 0.f;
  }
  for (size_t q = 0; q < w.size(); ++q)
    if (!std::isfinite(w[q])) {  // a guard: the checks above should make this unreachable
      const PrunableParam& p = set.param(set.layer_of(first_ + static_cast<int64_t>(q)));
      throw NumericalError(name() + ": the OBS update made weight " +
                           std::to_string(first_ + static_cast<int64_t>(q) - p.offset) + " of '" +
                           p.name + "' non-finite; the weights were left unchanged");
    }
  if (comm_ == nullptr)
    fisher_quadratic(before, w, *grads_, inverse_.blocks(), fisher_.damp, mask_, out.quadratic);
  if (options_.first_order) add_first_order(before, w, out);
  std::copy(w.begin(), w.end(), all.begin() + first_);
  if (comm_ != nullptr) {
    comm_->allgather_in_place(std::span<float>(all), partition_.column_counts());
    // A rank holds its rows of every column: its share of ½ δᵀFδ over all
    // blocks is fisher_quadratic over its rows, weighted by m_r / m (so the
    // λ term adds up to once).
    const double share =
        total_rows_ > 0 ? static_cast<double>(grads_->rows()) / static_cast<double>(total_rows_)
                        : (comm_->is_root() ? 1.0 : 0.0);
    if (share > 0) {
      std::vector<double> quadratic(out.quadratic.size(), 0.0);
      fisher_quadratic(start, all, *grads_, blocks_, fisher_.damp, mask_, quadratic);
      for (size_t l = 0; l < quadratic.size(); ++l) out.quadratic[l] += share * quadratic[l];
    }
    comm_->allreduce_sum(std::span<double>(out.predicted));
    comm_->allreduce_sum(std::span<double>(out.quadratic));
  }
  set.set_flat_weights(all);
  return out;
}

}  // namespace spruce::pruning
