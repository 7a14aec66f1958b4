// Synchronized batch norm for data-parallel training (README, "Scaling out
// with MPI"). By default each rank normalises with the statistics of its own
// samples (as PyTorch's DistributedDataParallel); while a SyncBatchNorm
// object lives, training-mode batch_norm (batch_norm.h) instead computes each
// channel's mean and variance over the samples of every rank, and its
// backward adds d x's sums over ranks too, so N ranks compute what one
// process computes on the global batch (to float rounding). Cost: two
// allreduces of C doubles per batch-norm forward, one of 2C per backward.
//
// The trainer keeps one SyncBatchNorm around each step's forward and
// backward; a batch_norm call records the context at forward time, so its
// backward is synchronized with the same one. One context at a time, set and
// used from the main thread.
#pragma once

#include <cstdint>
#include <vector>

#include "../communicator.h"

namespace spruce::ops {

/// A synchronization context: the ranks and the weight of this rank's loss
/// in the global batch's mean loss (its samples / the global batch's).
struct BatchNormSync {
  Communicator* comm = nullptr;
  double share = 1.0;
};

class SyncBatchNorm {
 public:
  /// local: this rank's samples in the step (>= 1), whole: the global batch's.
  SyncBatchNorm(Communicator& comm, int64_t local, int64_t whole);
  ~SyncBatchNorm();
  SyncBatchNorm(const SyncBatchNorm&) = delete;
  SyncBatchNorm& operator=(const SyncBatchNorm&) = delete;

 private:
  BatchNormSync context_;
};

/// The live SyncBatchNorm's context, or null.
const BatchNormSync* active_batch_norm_sync();

/// Global per-channel mean and biased variance from this rank's shifted
/// moments over M values (shift, s1 = sum (x - shift), s2 = sum (x - shift)^2,
/// each [C]). Returns the number of values over all ranks.
int64_t sync_moments(const BatchNormSync& sync, int64_t M, const std::vector<double>& shift,
                     const std::vector<double>& s1, const std::vector<double>& s2,
                     std::vector<double>& mean, std::vector<double>& var);

/// Replaces this rank's sums of g' and g' (x - mean) ([C] each, in this
/// rank's loss units) by their totals over ranks, in the same units.
void sync_grad_sums(const BatchNormSync& sync, std::vector<double>& sg, std::vector<double>& sgx);

}  // namespace spruce::ops
