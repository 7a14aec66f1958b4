// Data-parallel SGD's gradient exchange (README, "Scaling out with MPI").
// Each of N ranks runs forward and backward on its part of the global batch
// (data/data_loader.h, DataLoaderOptions::shard) and gets the gradient g_r of
// the mean loss over its B_r samples; the global batch's gradient is
//   g = Σ_r (B_r / B) g_r,
// which GradientAverager forms in place with one allreduce per bucket of
// parameters (consecutive parameters of about bucket_bytes, packed into one
// buffer: a few large messages instead of one per tensor). Every rank gets
// the same bits, so every rank takes the same SGD step and the replicas
// never drift apart. The exchange runs after backward, not overlapped with
// it: on the machines measured it is a few per cent of a step (README).
#pragma once

#include <cstdint>
#include <vector>

#include "../core/communicator.h"
#include "sgd.h"

namespace spruce::optim {

class GradientAverager {
 public:
  GradientAverager(Communicator& comm, NamedTensors params, int64_t bucket_bytes = 4 << 20);

  /// Replaces every parameter's gradient by the global batch's, given this
  /// rank's sample count `local` and the global batch's `whole`. A parameter
  /// without a gradient (a rank with no sample) counts as zero. With one
  /// rank nothing is touched.
  void average(int64_t local, int64_t whole);

  /// Seconds spent in average() so far (packing, allreduce, unpacking).
  double seconds() const { return seconds_; }
  /// Bytes one average() sends into the allreduce (the gradients, float32).
  int64_t bytes_per_step() const;

 private:
  Communicator& comm_;
  NamedTensors params_;
  std::vector<size_t> bucket_start_;  // first parameter of each bucket, then params_.size()
  std::vector<float> buffer_;
  double seconds_ = 0.0;
};

/// Replaces each tensor by its mean over the ranks (batch-norm running
/// statistics, which each rank updates from its own samples).
void average_over_ranks(Communicator& comm, const NamedTensors& tensors);

}  // namespace spruce::optim
