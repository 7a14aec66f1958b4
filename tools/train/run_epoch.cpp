// One epoch of spruce-train: its optimizer steps (with the learning rate of
// the schedule and the pruning steps due within the epoch, mid-epoch
// checkpoints and stops on Ctrl-C), then its end: evaluation, the log rows
// and the epoch-end checkpoint.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <span>

#include "core/error.h"
#include "core/io/snapshots.h"
#include "core/ops/batch_norm_sync.h"
#include "core/ops/loss.h"
#include "core/stop_request.h"
#include "tools/common/datasets.h"
#include "tools/common/json.h"
#include "tools/common/progress.h"
#include "tools/common/report.h"
#include "tools/train/run.h"

namespace spruce::train {

namespace fs = std::filesystem;

namespace {

// "nan", "inf" or "-inf": printf and std::to_string write "-nan" for a NaN
// whose sign bit is set, which reads like a negative number.
std::string non_finite_text(float v) {
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

}  // namespace

void Run::train_epoch() {
  cli::ProgressBar bar("epoch " + std::to_string(epoch_ + 1) + "/" + std::to_string(s_.epochs),
                       steps_per_epoch_, "img/s", s_.batch);
  const auto start = std::chrono::steady_clock::now();
  const double seconds_before = stats_.seconds;
  if (batch_in_epoch_ == 0 && s_.prune_unit == "epoch") maybe_prune(epoch_);
  model_->train();
  while (batch_in_epoch_ < steps_per_epoch_) {
    if (s_.prune_unit == "step") maybe_prune(global_step_);
    auto batch = loader_->next();
    if (!batch) break;
    opt_->set_lr(lr_at(global_step_));
    const auto n = static_cast<int64_t>(batch->labels.size());
    // A last batch smaller than the number of ranks would leave a rank
    // without a sample: every rank skips it alike.
    if (batch->whole_size < comm_.size()) {
      ++batch_in_epoch_;
      ++global_step_;
      continue;
    }
    std::unique_ptr<ops::SyncBatchNorm> sync_bn;
    if (s_.sync_bn && comm_.size() > 1)
      sync_bn = std::make_unique<ops::SyncBatchNorm>(comm_, n, batch->whole_size);
    Tensor logits = (*model_)(batch->images);
    Tensor loss = ops::cross_entropy(logits, batch->labels);
    // The global batch's loss and hits, the same on every rank (so a NaN stops them all).
    double sums[3] = {static_cast<double>(loss.item()) * static_cast<double>(n),
                      static_cast<double>(ops::count_correct(logits, batch->labels)),
                      static_cast<double>(n)};
    comm_.allreduce_sum(std::span<double>(sums));
    const float l = static_cast<float>(sums[0] / sums[2]);
    if (!std::isfinite(l))
      throw Error("loss is " + non_finite_text(l) + " at epoch " + std::to_string(epoch_ + 1) +
                  " step " + std::to_string(batch_in_epoch_ + 1) + " (global step " +
                  std::to_string(global_step_ + 1) + "); stopped, " +
                  (fs::exists(out_ / "last.ckpt")
                       ? "the last good checkpoint " + (out_ / "last.ckpt").string() + " is kept"
                       : std::string("before the first checkpoint, so nothing is written")) +
                  " (try a lower --lr)");
    model_->zero_grad();
    loss.backward();
    sync_bn.reset();
    averager_->average(n, batch->whole_size);
    opt_->step();
    // Every step, so the ranks' statistics are equal whenever a checkpoint
    // is written (mid-epoch, on a stop, at the epoch's end) and a resumed run
    // repeats the uninterrupted one bit for bit; averaging once an epoch is
    // the same average in exact arithmetic, not in float.
    average_running_statistics();
    stats_.loss_sum += comm_.size() > 1 ? sums[0] : static_cast<double>(l) * static_cast<double>(n);
    stats_.correct += static_cast<int64_t>(sums[1]);
    stats_.seen += batch->whole_size;
    ++batch_in_epoch_;
    ++global_step_;
    stats_.seconds =
        seconds_before +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char extra[128];
    std::snprintf(extra, sizeof extra, " loss %.4f acc %.2f%% lr %.4g",
                  stats_.loss_sum / static_cast<double>(stats_.seen),
                  100.0 * static_cast<double>(stats_.correct) / static_cast<double>(stats_.seen),
                  opt_->lr());
    bar.update(batch_in_epoch_, extra);
    if (s_.checkpoint_every > 0 && global_step_ % s_.checkpoint_every == 0 &&
        batch_in_epoch_ < steps_per_epoch_) {
      save_checkpoint("last.ckpt");
    }
    // Ctrl-C: the step is done; save it and stop. At the epoch's last step,
    // end_epoch() evaluates and checkpoints first (main() stops after it).
    if (batch_in_epoch_ < steps_per_epoch_ && StopOnSignal::requested_on_any(world())) {
      save_checkpoint("last.ckpt");
      stop_if_requested();
    }
  }
  char extra[128];
  std::snprintf(extra, sizeof extra, " loss %.4f acc %.2f%%",
                stats_.loss_sum / std::max<double>(1.0, static_cast<double>(stats_.seen)),
                100.0 * static_cast<double>(stats_.correct) /
                    std::max<double>(1.0, static_cast<double>(stats_.seen)));
  bar.finish(extra);
}

void Run::end_epoch() {
  const auto result =
      cli::evaluate(*model_, test_set_, cli::eval_transforms(s_.data, spec_.config.in_channels),
                    256, s_.eval_limit);
  const auto sparsity = cli::layer_sparsity(*model_);
  const double seen = std::max<double>(1.0, static_cast<double>(stats_.seen));
  const double train_loss = stats_.loss_sum / seen,
               train_acc = static_cast<double>(stats_.correct) / seen;
  const double ips = stats_.seconds > 0 ? static_cast<double>(stats_.seen) / stats_.seconds : 0;
  char row[256];
  std::snprintf(row, sizeof row, "%lld,%lld,%.6g,%.6f,%.6f,%.6f,%.6f,%.2f,%.1f,%.6f\n",
                static_cast<long long>(epoch_ + 1), static_cast<long long>(global_step_),
                opt_->lr(), train_loss, train_acc, result.loss, result.accuracy, stats_.seconds,
                ips, sparsity.back().sparsity());
  csv_ += row;
  cli::Json j = {{"epoch", epoch_ + 1},
                 {"step", global_step_},
                 {"lr", opt_->lr()},
                 {"train_loss", train_loss},
                 {"train_acc", train_acc},
                 {"test_loss", result.loss},
                 {"test_acc", result.accuracy},
                 {"epoch_seconds", stats_.seconds},
                 {"img_per_s", ips}};
  for (const auto& r : sparsity) j["sparsity"][r.name] = r.sparsity();
  jsonl_ += cli::json_text(j) + "\n";
  std::printf(
      "epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.1fs  %.0f img/s\n",
      static_cast<long long>(epoch_ + 1), static_cast<long long>(s_.epochs), train_loss,
      100 * train_acc, result.loss, 100 * result.accuracy, stats_.seconds, ips);
  std::fflush(stdout);
  ++epoch_;
  batch_in_epoch_ = 0;
  stats_ = {};
  loader_->seek(epoch_, 0);
  save_checkpoint("last.ckpt");
  if (s_.keep_checkpoints > 0 && comm_.is_root())
    io::save_snapshot((out_ / "last.ckpt").string(), epoch_, s_.keep_checkpoints);
  write_logs();
}

void Run::average_running_statistics() {
  if (comm_.size() == 1) return;
  optim::NamedTensors stats;
  for (const auto& [name, t] : model_->named_buffers())
    if (name.find("running_") != std::string::npos) stats.emplace_back(name, t);
  optim::average_over_ranks(comm_, stats);
}

}  // namespace spruce::train
