// Multiply-add accounting for benchmarks: while a MacCounter is alive on a
// thread, every conv2d, linear and matmul forward called on that thread adds
// the multiply-adds its layer shape implies (conv: N * C_out * H_out * W_out *
// C_in / groups * KH * KW; linear: N * In * Out; matmul: M * K * N). This is
// the count the PyTorch comparison uses for GFLOP/s (batch norm, ReLU, adds and pooling
// are not counted), taken from the ops themselves so any model is covered.
// The sparse inference ops (sparse_conv2d.h) count only the products of
// their nonzero weights: what remains to compute once zeros are skipped.
#pragma once

#include <cstdint>

namespace spruce::ops {

/// Counts the multiply-adds of the conv2d/linear/matmul forwards run on this
/// thread during its lifetime. Counters nest: each sees the ops run while it
/// is the innermost one alive.
class MacCounter {
 public:
  MacCounter();
  ~MacCounter();
  MacCounter(const MacCounter&) = delete;
  MacCounter& operator=(const MacCounter&) = delete;
  int64_t total() const { return total_; }

 private:
  friend void count_macs(int64_t macs);
  int64_t total_ = 0;
  MacCounter* outer_;
};

/// Adds `macs` to the innermost live counter of this thread (ops call this).
void count_macs(int64_t macs);

}  // namespace spruce::ops
