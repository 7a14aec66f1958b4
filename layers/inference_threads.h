// The thread count an inference forward runs fastest on, chosen per input
// shape by timing the first calls of that shape.
//
// A large batch keeps every core busy, but a single image of a pruned model
// does so little work per layer that handing it to the pool costs more than
// the second core gives: each layer's activations move between the cores'
// caches and the pool threads wake up two dozen times a forward (ResNet-20 B at
// 90 %, batch 1, `spruce-bench --sections sparse --quick --threads 1` and
// `--threads 2` on 2026-12-05: 0.34 ms on one thread, 0.39 ms on two; its
// dense form 0.88 and 0.69 ms). Which way a model and shape go depends on the model, its sparsity
// and the machine, so it is measured, not guessed. Every kernel gives the same
// bits on any thread count in inference (tests/layers/test_inference_threads.cpp),
// so the choice changes the time only.
#pragma once

#include <map>
#include <vector>

#include "../core/tensor.h"
#include "module.h"

namespace spruce {

/// The decision for one shape: which thread count to run next, fed with the
/// time each call took. A first call that takes at least kLargeCall (or a
/// pool of one thread) decides for the pool's count at once; else, after one
/// untimed call on one thread, kPairs alternated pairs (all threads, then
/// one) are timed and the faster side by the median of the pairs' ratios is
/// kept for good.
class ThreadTrial {
 public:
  static constexpr double kLargeCall = 5e-3;  // seconds
  static constexpr int kPairs = 5;

  explicit ThreadTrial(int threads);
  bool decided() const { return chosen_ > 0; }
  /// Threads for the next call: the choice once decided.
  int next() const;
  /// The call just made with next() threads took `seconds`.
  void record(double seconds);
  /// The choice (0 while undecided).
  int chosen() const { return chosen_; }

 private:
  int threads_;
  int calls_ = 0;
  int chosen_ = 0;
  std::vector<double> all_, one_;  // timed calls on every thread, on one
};

/// Runs a module's inference forwards, each shape on the thread count its
/// ThreadTrial chose (the pool's own count until decided, then possibly
/// one, by ThreadLimit). Keep one per module and sparse mode: a shape's
/// choice belongs to the model that was timed. One caller at a time (like
/// the module it runs).
class InferenceThreads {
 public:
  /// module.forward(x) on the shape's thread count; the caller puts the
  /// module in eval mode and turns the graph off (NoGradGuard).
  Tensor forward(Module& module, const Tensor& x);
  /// The count chosen for a shape (0 while undecided or never seen).
  int chosen(const Shape& shape) const;

 private:
  std::map<Shape, ThreadTrial> trials_;
};

}  // namespace spruce
