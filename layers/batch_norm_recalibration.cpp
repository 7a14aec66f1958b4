// recalibrate_batch_norm: a cumulative average of batch statistics obtained by
// giving batch k (1-based) the running-average factor 1/k, so that
// running_k = (1 - 1/k) running_{k-1} + (1/k) batch_k = mean of batches 1..k.
#include "batch_norm_recalibration.h"

#include <string>
#include <utility>
#include <vector>

#include "../core/autograd.h"
#include "../core/error.h"
#include "batch_norm2d.h"

namespace spruce {

namespace {

void collect_modules(Module& m, std::vector<Module*>& all, std::vector<BatchNorm2d*>& bns) {
  all.push_back(&m);
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) bns.push_back(bn);
  for (auto& [name, child] : m.named_children()) collect_modules(*child, all, bns);
}

// Puts back momentum, the batch counter and every module's training flag.
// `all` is in pre-order, so a parent's recursive train() runs before its
// children's own flags are set again: mixed modes come back as they were.
class RestoreOnExit {
 public:
  RestoreOnExit(std::vector<Module*> all, std::vector<BatchNorm2d*> bns)
      : all_(std::move(all)), bns_(std::move(bns)) {
    for (Module* m : all_) training_.push_back(m->is_training());
    for (BatchNorm2d* bn : bns_) {
      momentum_.push_back(bn->options().momentum);
      tracked_.push_back(bn->num_batches_tracked().item());
    }
  }
  ~RestoreOnExit() {
    for (size_t i = 0; i < all_.size(); ++i) all_[i]->train(training_[i]);
    for (size_t i = 0; i < bns_.size(); ++i) {
      bns_[i]->set_momentum(momentum_[i]);
      bns_[i]->num_batches_tracked().data()[0] = tracked_[i];
    }
  }
  RestoreOnExit(const RestoreOnExit&) = delete;
  RestoreOnExit& operator=(const RestoreOnExit&) = delete;

 private:
  std::vector<Module*> all_;
  std::vector<BatchNorm2d*> bns_;
  std::vector<bool> training_;
  std::vector<float> momentum_, tracked_;
};

}  // namespace

int64_t recalibrate_batch_norm(Module& model, int64_t num_batches, const InputSource& next_batch) {
  if (num_batches < 0)
    throw UsageError("recalibrate_batch_norm: num_batches must be >= 0, got " +
                     std::to_string(num_batches));
  std::vector<Module*> all;
  std::vector<BatchNorm2d*> bns;
  collect_modules(model, all, bns);
  if (num_batches == 0 || bns.empty()) return 0;

  RestoreOnExit restore(all, bns);
  NoGradGuard no_grad;
  model.train(true);
  // PyTorch's reset_running_stats(): factor 1 on the first batch then discards
  // the old values entirely (the reset keeps a NaN from surviving as 0 * NaN).
  for (BatchNorm2d* bn : bns) {
    float* mean = bn->running_mean().data();
    float* var = bn->running_var().data();
    for (int64_t c = 0; c < bn->num_features(); ++c) mean[c] = 0.f, var[c] = 1.f;
  }
  for (int64_t k = 1; k <= num_batches; ++k) {
    for (BatchNorm2d* bn : bns) bn->set_momentum(1.f / static_cast<float>(k));
    model.forward(next_batch());
  }
  return static_cast<int64_t>(bns.size());
}

}  // namespace spruce
