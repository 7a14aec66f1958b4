// How an inference forward runs fastest, chosen per input shape by timing the
// first calls of that shape: on how many threads, and whether a large batch
// goes through the model whole or a few samples at a time.
//
// A large batch keeps every core busy, but a single image of a pruned model
// does so little work per layer that handing it to the pool costs more than
// the second core gives: each layer's activations move between the cores'
// caches and the pool threads wake up two dozen times a forward (ResNet-20 B at
// 90 %, batch 1, `spruce-bench --sections sparse --quick --threads 1` and
// `--threads 2` on 2026-12-05: 0.34 ms on one thread, 0.39 ms on two; its
// dense form 0.88 and 0.69 ms).
//
// A large batch goes through each layer for all its samples before the next
// layer starts, so a layer reads its input back from L3 or memory (batch 128
// of ResNet-20's first stage: 6.4 MB an activation, beside 2 MB of L2 a
// core). In chunks of kChunkPerThread samples a thread, the next layer finds
// its input still in the core's L2: pruned ResNet-20 B, whose sparse layers do
// little arithmetic per byte, runs 9-17 % faster so at batch 128 (90-98 %
// sparse, `spruce-bench --sections sparse --quick`, "b auto" against the whole
// batch, 2026-12-05); dense ResNet-20, whose Winograd convs gain from large
// batches, slower (the eval forward at batch 32 against 128, 2 threads: 5,700
// against 6,000 images/s); MobileNetV1 about the same.
//
// Which way a model and shape go depends on the model, its sparsity and the
// machine, so it is measured, not guessed. Every kernel gives the same bits on
// any thread count in inference, and a sample's outputs do not depend on the
// other samples of its batch (tests/layers/test_inference_threads.cpp,
// tests/models/test_sparse_inference.cpp), so the choice changes the time
// only. That holds where ops::inference_split_invariant() says so (builds
// with spruce's own conv kernels); a portable build always runs the pool's
// thread count on the whole batch.
#pragma once

#include <map>
#include <vector>

#include "../core/tensor.h"
#include "module.h"

namespace spruce {

/// One way to run a shape's forwards.
struct InferencePlan {
  int threads = 1;
  int64_t chunk = 0;  // samples per forward; 0: the whole batch at once
  bool operator==(const InferencePlan&) const = default;
};

/// The decision for one shape, fed with the time each call took. Call 0 runs
/// on every thread, whole; if it takes at least kLargeCall (or the pool has
/// one thread), the candidate is the chunked plan (when the batch holds two
/// chunks or more; else call 0 decides), otherwise one thread. After one
/// untimed call of the candidate (its scratch buffers and caches warm up),
/// kPairs alternated pairs (every thread whole, then the candidate) are timed
/// and the faster side by the median of the pairs' ratios is kept for good;
/// a tie keeps every thread, whole.
class PlanTrial {
 public:
  static constexpr double kLargeCall = 5e-3;  // seconds
  static constexpr int kPairs = 5;
  static constexpr int64_t kChunkPerThread = 16;  // samples

  /// may_split: whether the plan may differ from every thread on the whole
  /// batch (ops::inference_split_invariant()); if not, decided at once.
  PlanTrial(int threads, int64_t batch, bool may_split = true);
  bool decided() const { return decided_; }
  /// How to run the next call: the choice once decided.
  InferencePlan next() const;
  /// The call just made with next() took `seconds`.
  void record(double seconds);
  /// The choice (threads 0 while undecided).
  InferencePlan chosen() const { return decided_ ? chosen_ : InferencePlan{0, 0}; }

 private:
  InferencePlan whole_, candidate_, chosen_;
  int64_t batch_;
  bool decided_ = false;
  int calls_ = 0;
  std::vector<double> whole_times_, candidate_times_;
};

/// Runs a module's inference forwards, each shape by the plan its PlanTrial
/// chose (on the pool's count, whole, until decided; fewer threads by
/// ThreadLimit; chunks of the batch one after another, their outputs joined
/// along the first dimension). Keep one per module and sparse mode: a shape's
/// choice belongs to the model that was timed. One caller at a time (like the
/// module it runs).
class InferenceThreads {
 public:
  /// module.forward(x) by the shape's plan; the caller puts the module in
  /// eval mode and turns the graph off (NoGradGuard).
  Tensor forward(Module& module, const Tensor& x);
  /// The plan chosen for a shape (threads 0 while undecided or never seen).
  InferencePlan chosen(const Shape& shape) const;

 private:
  std::map<Shape, PlanTrial> trials_;
};

/// module.forward on ceil(n / chunk) consecutive parts of x's n samples
/// (sizes differ by one at most), one after another, the outputs joined along
/// the first dimension; chunk >= n or 0: one call. Throws UsageError when an
/// output's first dimension is not its part's sample count.
Tensor forward_in_chunks(Module& module, const Tensor& x, int64_t chunk);

}  // namespace spruce
