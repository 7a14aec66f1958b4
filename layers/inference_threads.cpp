// InferenceThreads: per-shape inference plans, measured (see the header).
#include "inference_threads.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>

#include "../core/error.h"
#include "../core/ops/conv2d.h"
#include "../core/parallel.h"

namespace spruce {

PlanTrial::PlanTrial(int threads, int64_t batch, bool may_split)
    : whole_{std::max(1, threads), 0},
      candidate_(whole_),
      chosen_(whole_),
      batch_(batch),
      decided_(!may_split) {}

InferencePlan PlanTrial::next() const {
  if (decided_) return chosen_;
  return calls_ == 0 || (calls_ >= 2 && calls_ % 2 == 0) ? whole_ : candidate_;
}

void PlanTrial::record(double seconds) {
  if (decided_) return;
  if (calls_ == 0) {
    const int64_t chunk = kChunkPerThread * whole_.threads;
    if (whole_.threads > 1 && seconds < kLargeCall)
      candidate_ = {1, 0};
    else if (batch_ >= 2 * chunk)
      candidate_ = {whole_.threads, chunk};
    else
      decided_ = true;  // chosen_ is whole_
  } else if (calls_ >= 2) {
    (calls_ % 2 == 0 ? whole_times_ : candidate_times_).push_back(seconds);
  }
  ++calls_;
  if (decided_ || static_cast<int>(candidate_times_.size()) < kPairs) return;
  std::vector<double> ratio(candidate_times_.size());  // the candidate's time over whole's
  for (size_t i = 0; i < ratio.size(); ++i) ratio[i] = candidate_times_[i] / whole_times_[i];
  std::nth_element(ratio.begin(), ratio.begin() + ratio.size() / 2, ratio.end());
  chosen_ = ratio[ratio.size() / 2] < 1.0 ? candidate_ : whole_;
  decided_ = true;
}

Tensor forward_in_chunks(Module& module, const Tensor& x, int64_t chunk) {
  const int64_t n = x.dim() > 0 ? x.size(0) : 0;
  if (chunk <= 0 || chunk >= n) return module.forward(x);
  // Near-equal parts: a part of one sample would take the single-sample
  // kernels (direct convs, not Winograd) and round differently.
  const int64_t parts = (n + chunk - 1) / chunk;
  const int64_t per_sample = x.numel() / n;
  Tensor out;
  int64_t out_per_sample = 0;
  for (int64_t i = 0, n0 = 0; i < parts; ++i) {
    const int64_t nb = n / parts + (i < n % parts ? 1 : 0);
    Shape part_shape = x.shape();
    part_shape[0] = nb;
    Tensor part = Tensor::empty(part_shape);
    std::memcpy(part.data(), x.data() + n0 * per_sample,
                sizeof(float) * static_cast<size_t>(nb * per_sample));
    const Tensor y = module.forward(part);
    if (y.dim() == 0 || y.size(0) != nb)
      throw UsageError("forward_in_chunks: the module's output " + shape_str(y.shape()) +
                       " does not have the " + std::to_string(nb) + " samples of its input");
    if (!out.defined()) {
      Shape out_shape = y.shape();
      out_shape[0] = n;
      out = Tensor::empty(out_shape);
      out_per_sample = y.numel() / nb;
    }
    std::memcpy(out.data() + n0 * out_per_sample, y.data(),
                sizeof(float) * static_cast<size_t>(nb * out_per_sample));
    n0 += nb;
  }
  return out;
}

Tensor InferenceThreads::forward(Module& module, const Tensor& x) {
  auto it = trials_.find(x.shape());
  if (it == trials_.end())
    it = trials_
             .emplace(x.shape(), PlanTrial(num_threads(), x.dim() > 0 ? x.size(0) : 1,
                                           ops::inference_split_invariant()))
             .first;
  PlanTrial& trial = it->second;
  const InferencePlan plan = trial.next();
  const ThreadLimit limit(plan.threads);
  if (trial.decided()) return forward_in_chunks(module, x, plan.chunk);
  const auto start = std::chrono::steady_clock::now();
  Tensor y = forward_in_chunks(module, x, plan.chunk);
  trial.record(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return y;
}

InferencePlan InferenceThreads::chosen(const Shape& shape) const {
  const auto it = trials_.find(shape);
  return it == trials_.end() ? InferencePlan{0, 0} : it->second.chosen();
}

}  // namespace spruce
