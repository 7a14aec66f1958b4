// A grow-only, aligned float buffer for kernels' temporaries: big scratch
// (im2col columns, partial sums) is reused from call to call instead of
// being allocated, page-faulted in and freed for every layer. Kernels keep
// one per thread (a thread_local Scratch in a function), so pool threads
// never share one.
#pragma once

#include <cstdint>
#include <memory>

#include "../tensor.h"

namespace spruce::ops {

class Scratch {
 public:
  /// At least n floats (contents unspecified), valid until the next get().
  float* get(int64_t n) {
    if (!buffer_ || buffer_->size() < n) buffer_ = std::make_unique<Storage>(n);
    return buffer_->data();
  }

 private:
  std::unique_ptr<Storage> buffer_;
};

}  // namespace spruce::ops
