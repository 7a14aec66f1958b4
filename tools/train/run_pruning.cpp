// The gradual pruning of a spruce-train run, through the library's
// pruning::GradualPruner: the pruner made from the settings, a pruning step
// (Fisher samples that are a pure function of the seed and the step, masks
// handed to the optimizer, optional batch-norm recalibration, test loss
// before and after, logged to pruning.csv and log.jsonl), and the learning
// rate around the steps (--prune-lr-factor, the --finetune-lr cosine).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "data/data_loader.h"
#include "tools/common/datasets.h"
#include "tools/common/json.h"
#include "tools/common/pruning_run.h"
#include "tools/train/run.h"

namespace spruce::train {

void Run::setup_pruning() {
  if (s_.prune_method.empty()) return;
  pruning::GradualPruningOptions o;
  o.method = pruning::parse_method(s_.prune_method, s_.update_scale);
  o.schedule = {s_.prune_start, s_.prune_end, s_.prune_every, s_.initial_sparsity,
                s_.final_sparsity};
  o.fisher = s_.fisher;
  if (s_.damp_weight_decay) o.fisher.damp += s_.weight_decay;
  o.sub_steps = s_.sub_steps;
  o.reset_momentum = s_.prune_reset_momentum;
  o.lr_factor = s_.prune_lr_factor;
  if (o.method.target == pruning::Target::kFlops) {  // "-flops": costs from one sample
    const data::ImageShape image = train_set_->image_shape();
    o.sample_shape = {image.channels, image.height, image.width};
  }
  pruner_ = std::make_unique<pruning::GradualPruner>(
      *model_, cli::prunable_patterns(spec_.name, s_.patterns, s_.all_layers), o, &world());
}

double Run::lr_at(int64_t step) const {
  return scheduled_lr(step) *
         (pruner_ ? pruner_->lr_factor(epoch_range(step).first, epoch_range(step).second) : 1.0);
}

std::pair<int64_t, int64_t> Run::epoch_range(int64_t step) const {
  const int64_t e = step / steps_per_epoch_;
  if (s_.prune_unit == "epoch") return {e, e + 1};
  return {e * steps_per_epoch_, (e + 1) * steps_per_epoch_};
}

double Run::scheduled_lr(int64_t step) const {
  if (finetune_start_step_ < 0 || step < finetune_start_step_) return schedule_->lr_at(step);
  const double total = static_cast<double>(steps_per_epoch_ * s_.epochs - finetune_start_step_);
  const double progress = static_cast<double>(step - finetune_start_step_) / std::max(1.0, total);
  return 0.5 * s_.finetune_lr * (1 + std::cos(M_PI * progress));
}

void Run::maybe_prune(int64_t t) {
  if (!pruner_ || !pruner_->is_step(t)) return;
  const auto tf = cli::eval_transforms(s_.data, spec_.config.in_channels);
  const auto before = cli::evaluate(*model_, test_set_, tf, 256, s_.prune_eval_limit);
  // Fresh samples at every (sub-)step, a pure function of (seed, t, j): resumed runs draw the same.
  const auto seed_of = [&](int64_t j) {
    const uint64_t seed = static_cast<uint64_t>(s_.seed), tu = static_cast<uint64_t>(t);
    return j == 0 ? data::derive_seed(seed, {0x9f15, tu})
                  : data::derive_seed(seed, {0x9f15, tu, static_cast<uint64_t>(j)});
  };
  // With --fisher-augment the samples get the training augmentation (random crop and flip).
  const auto fisher_tf =
      s_.fisher_augment ? cli::train_transforms(s_.data, spec_.config.in_channels, s_.crop, s_.flip)
                        : tf;
  const pruning::GradualStep step = pruner_->prune(
      t, cli::fisher_batches(train_view_, fisher_tf, s_.fisher, seed_of), cli::collect_progress());
  opt_->apply_masks();  // the pruned weights' momentum is zero from now on
  if (pruner_->options().reset_momentum) opt_->reset_momentum();
  // Optional: batch-norm statistics of the pruned weights, from batches that are a pure function of
  // (seed, t).
  cli::recalibrate_bn(
      *model_, train_view_, tf, s_.bn,
      data::derive_seed(static_cast<uint64_t>(s_.seed), {0xb2ca1, static_cast<uint64_t>(t)}));
  const auto after = cli::evaluate(*model_, test_set_, tf, 256, s_.prune_eval_limit);
  log_prune_step(step, before, after);
}

void Run::log_prune_step(const pruning::GradualStep& step, const cli::EvalResult& before,
                         const cli::EvalResult& after) {
  const pruning::PruneReport& report = step.report;
  const std::string method = pruner_->options().method.name();
  const double target = step.target, collect_s = step.collect_seconds;
  const int64_t t = step.t;
  // Magnitude pruning predicts nothing (its predicted loss is NaN): say so in words.
  char predicted[48];
  if (std::isnan(report.predicted_loss))
    std::snprintf(predicted, sizeof predicted, "no predicted dL");
  else
    std::snprintf(predicted, sizeof predicted, "predicted dL %.4f", report.predicted_loss);
  // A FLOP target counts the prunable multiply-adds removed, not weights.
  char reached[128];
  if (pruner_->options().method.target == pruning::Target::kFlops)
    std::snprintf(reached, sizeof reached,
                  "%.2f%% of prunable MACs removed (target %.2f%%; weights %.2f%%)",
                  100.0 * (1.0 - static_cast<double>(report.macs_after) / report.macs_dense),
                  100 * target, 100 * report.sparsity);
  else
    std::snprintf(reached, sizeof reached, "to %.2f%% (target %.2f%%)", 100 * report.sparsity,
                  100 * target);
  std::printf("prune %s %lld: %s %s, %s, test loss %.4f -> %.4f, top-1 %.2f%% -> %.2f%%, %.1fs\n",
              s_.prune_unit.c_str(), static_cast<long long>(t), method.c_str(), reached, predicted,
              before.loss, after.loss, 100 * before.accuracy, 100 * after.accuracy,
              report.total_seconds);
  std::fflush(stdout);
  char row[512];
  std::snprintf(row, sizeof row, "%s,%lld,%lld,%lld,%.6f,%.6f,%.6g,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f\n",
                s_.prune_unit.c_str(), static_cast<long long>(t), static_cast<long long>(epoch_),
                static_cast<long long>(global_step_), target, report.sparsity,
                report.predicted_loss, before.loss, after.loss, before.accuracy, after.accuracy,
                collect_s, report.inverse_seconds);
  prune_csv_ += row;
  cli::Json j = {{"event", "prune"},
                 {"unit", s_.prune_unit},
                 {"t", t},
                 {"epoch", epoch_},
                 {"step", global_step_},
                 {"method", method},
                 {"target", target},
                 {"sparsity", report.sparsity},
                 {"predicted_loss_increase", report.predicted_loss},
                 {"test_loss_before", before.loss},
                 {"test_loss_after", after.loss},
                 {"test_acc_before", before.accuracy},
                 {"test_acc_after", after.accuracy},
                 {"collect_seconds", collect_s},
                 {"inverse_seconds", report.inverse_seconds}};
  if (s_.bn.enabled()) j["bn_recalibrate"] = s_.bn.batches;
  j["layers"] = cli::Json::object();
  for (const auto& l : report.layers) j["layers"][l.name] = l.sparsity;
  jsonl_ += cli::json_text(j) + "\n";
}

}  // namespace spruce::train
