// spruce-train's training run, one object over the settings (settings.h):
// Run::main() sets up model, data, optimizer, schedule and gradual pruner,
// resumes from a checkpoint or starts afresh, then trains epoch by epoch,
// logging (log.csv, log.jsonl, pruning.csv) and checkpointing as it goes.
// The parts live in one file each: run.cpp (setup, the run folder, main),
// run_checkpoint.cpp (checkpoint contents and logs), run_epoch.cpp (an
// epoch's steps and its end) and run_pruning.cpp (the pruning steps and the
// learning rate around them).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/communicator.h"
#include "core/io/checkpoint.h"
#include "core/io/run_lock.h"
#include "data/data_loader.h"
#include "data/dataset.h"
#include "layers/module.h"
#include "optim/data_parallel.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "pruning/gradual_pruner.h"
#include "tools/common/args.h"
#include "tools/common/evaluate.h"
#include "tools/common/model_io.h"
#include "tools/train/settings.h"

namespace spruce::train {

/// Per-epoch running sums, saved in mid-epoch checkpoints.
struct EpochStats {
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  double seconds = 0;
};

class Run {
 public:
  Run(const Settings& s, cli::Args& args) : s_(s), args_(args) {}

  int main();
  /// After a failure: releases the run folder's lock, then removes the
  /// directories main() created if they are still empty. A directory that
  /// existed before, or holds anything (a checkpoint, a log), is never removed.
  void remove_empty_run_dir();

 private:
  void setup_model_and_data();
  void restore(const io::Checkpoint& ck);
  void save_checkpoint(const std::string& name) const;
  void write_logs() const;
  /// A new run's logs: the CSV headers only.
  void start_logs();
  void train_epoch();
  void end_epoch();
  void setup_pruning();
  /// Prunes when time t (epoch or step, per --prune-unit) is a pruning step.
  void maybe_prune(int64_t t);
  /// Prints a pruning step and appends it to pruning.csv and log.jsonl.
  void log_prune_step(const pruning::GradualStep& step, const cli::EvalResult& before,
                      const cli::EvalResult& after);
  /// The learning rate at a global step: the schedule's (scheduled_lr), times
  /// --prune-lr-factor in an epoch that holds a pruning step.
  double lr_at(int64_t step) const;
  double scheduled_lr(int64_t step) const;
  /// The range of pruning times t (per --prune-unit) of the epoch holding `step`.
  std::pair<int64_t, int64_t> epoch_range(int64_t step) const;
  /// Creates out_ (and missing parents), remembering which ones it created.
  void create_run_dir();
  /// Takes the run folder's lock (one spruce-train per folder) if not held.
  void lock_run_dir();
  /// After a stop request (Ctrl-C, SIGTERM), agreed by every rank: throws
  /// Stopped naming the checkpoint and the command that continues the run.
  void stop_if_requested() const;
  /// The command that continues this run (under mpirun with as many ranks).
  std::string resume_command() const;
  /// Batch-norm running statistics: each rank's own, replaced by their mean
  /// (after every optimizer step; nothing with one rank).
  void average_running_statistics();

  const Settings& s_;
  cli::Args& args_;
  cli::ModelSpec spec_;
  std::unique_ptr<Module> model_;
  std::unique_ptr<optim::Sgd> opt_;
  Communicator& comm_ = world();
  std::unique_ptr<optim::GradientAverager> averager_;  // sums gradients over ranks
  std::unique_ptr<optim::LrSchedule> schedule_;
  std::shared_ptr<data::InMemoryDataset> train_set_, test_set_;
  std::shared_ptr<const data::Dataset> train_view_;
  std::unique_ptr<data::DataLoader> loader_;
  int64_t steps_per_epoch_ = 0, global_step_ = 0, epoch_ = 0, batch_in_epoch_ = 0;
  EpochStats stats_;
  std::string csv_, jsonl_, prune_csv_;
  std::filesystem::path out_;
  // Gradual pruning (null for dense training); the masks live in the model.
  std::unique_ptr<pruning::GradualPruner> pruner_;
  int64_t finetune_start_step_ = -1;
  std::vector<std::filesystem::path> created_dirs_;  // deepest first
  std::unique_ptr<io::RunLock> lock_;
};

}  // namespace spruce::train
