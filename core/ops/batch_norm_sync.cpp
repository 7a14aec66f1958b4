// Batch-norm statistics and gradient sums over ranks.
#include "batch_norm_sync.h"

#include <algorithm>
#include <string>

#include "../error.h"

namespace spruce::ops {
namespace {
const BatchNormSync* g_active = nullptr;  // main thread only
}  // namespace

SyncBatchNorm::SyncBatchNorm(Communicator& comm, int64_t local, int64_t whole) {
  if (local < 1 || whole < local)
    throw UsageError("SyncBatchNorm: " + std::to_string(local) + " of " + std::to_string(whole) +
                     " samples, expected 1 <= local <= whole");
  if (g_active != nullptr)
    throw UsageError("SyncBatchNorm: a synchronization context is already active");
  context_ = {&comm, static_cast<double>(local) / static_cast<double>(whole)};
  g_active = &context_;
}

SyncBatchNorm::~SyncBatchNorm() { g_active = nullptr; }

const BatchNormSync* active_batch_norm_sync() { return g_active; }

int64_t sync_moments(const BatchNormSync& sync, int64_t M, const std::vector<double>& shift,
                     const std::vector<double>& s1, const std::vector<double>& s2,
                     std::vector<double>& mean, std::vector<double>& var) {
  const size_t C = shift.size();
  // Pass 1: sum x and the count, over ranks -> the mean.
  std::vector<double> sums(C + 1);
  for (size_t c = 0; c < C; ++c) sums[c] = s1[c] + static_cast<double>(M) * shift[c];
  sums[C] = static_cast<double>(M);
  sync.comm->allreduce_sum(std::span<double>(sums));
  const double total = sums[C];
  mean.resize(C);
  for (size_t c = 0; c < C; ++c) mean[c] = sums[c] / total;
  // Pass 2: sum (x - mean)^2 from the shifted moments, over ranks -> the variance.
  std::vector<double> sq(C);
  for (size_t c = 0; c < C; ++c) {
    const double d = shift[c] - mean[c];
    sq[c] = s2[c] + 2.0 * d * s1[c] + static_cast<double>(M) * d * d;
  }
  sync.comm->allreduce_sum(std::span<double>(sq));
  var.resize(C);
  for (size_t c = 0; c < C; ++c) var[c] = std::max(0.0, sq[c] / total);
  return static_cast<int64_t>(total);
}

void sync_grad_sums(const BatchNormSync& sync, std::vector<double>& sg, std::vector<double>& sgx) {
  // In global-loss units (weighted by share), summed, back in this rank's units.
  const size_t C = sg.size();
  std::vector<double> both(2 * C);
  for (size_t c = 0; c < C; ++c) both[c] = sync.share * sg[c], both[C + c] = sync.share * sgx[c];
  sync.comm->allreduce_sum(std::span<double>(both));
  for (size_t c = 0; c < C; ++c) sg[c] = both[c] / sync.share, sgx[c] = both[C + c] / sync.share;
}

}  // namespace spruce::ops
