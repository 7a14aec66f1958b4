// InferenceThreads: per-shape thread counts, measured (see the header).
#include "inference_threads.h"

#include <algorithm>
#include <chrono>

#include "../core/parallel.h"

namespace spruce {

ThreadTrial::ThreadTrial(int threads) : threads_(std::max(1, threads)) {
  if (threads_ == 1) chosen_ = 1;
}

int ThreadTrial::next() const {
  if (decided()) return chosen_;
  // Call 0 on every thread (its time may decide at once), call 1 on one
  // (untimed: its scratch buffers and caches warm up), then pairs.
  if (calls_ == 1) return 1;
  return calls_ % 2 == 0 ? threads_ : 1;
}

void ThreadTrial::record(double seconds) {
  if (decided()) return;
  const int threads = next();
  if (calls_ == 0 && seconds >= kLargeCall) chosen_ = threads_;
  if (calls_ >= 2) (threads == 1 ? one_ : all_).push_back(seconds);
  ++calls_;
  if (decided() || static_cast<int>(one_.size()) < kPairs) return;
  std::vector<double> ratio(one_.size());  // one thread's time over every thread's
  for (size_t i = 0; i < one_.size(); ++i) ratio[i] = one_[i] / all_[i];
  std::nth_element(ratio.begin(), ratio.begin() + ratio.size() / 2, ratio.end());
  chosen_ = ratio[ratio.size() / 2] < 1.0 ? 1 : threads_;
}

Tensor InferenceThreads::forward(Module& module, const Tensor& x) {
  auto it = trials_.find(x.shape());
  if (it == trials_.end()) it = trials_.emplace(x.shape(), ThreadTrial(num_threads())).first;
  ThreadTrial& trial = it->second;
  const ThreadLimit limit(trial.next());
  if (trial.decided()) return module.forward(x);
  const auto start = std::chrono::steady_clock::now();
  Tensor y = module.forward(x);
  trial.record(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return y;
}

int InferenceThreads::chosen(const Shape& shape) const {
  const auto it = trials_.find(shape);
  return it == trials_.end() ? 0 : it->second.chosen();
}

}  // namespace spruce
