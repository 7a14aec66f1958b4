// spruce-train: trains a model from the registry on a data set, with a
// progress bar, per-epoch logs (CSV and JSON lines), an atomic checkpoint
// after every epoch (and every --checkpoint-every steps), exact --resume, and
// optionally a gradual pruning schedule (pruning/schedule.h) with any pruner.
// Every flag can also come from a YAML recipe (--recipe, tools/common/recipe.h).
//
// Resuming is bit-exact: the checkpoint holds the model (with masks), the
// optimizer's velocities, the step counters and every setting; batches are a
// pure function of (seed, epoch, batch index), so the run continues with
// exactly the batches it would have seen.
//
// Under `mpirun -np N` the run is data-parallel (README, "Scaling out with
// MPI"): --batch-size stays the global batch, each rank trains on its shard
// of it (DataLoaderOptions::shard) and the gradients are summed over ranks
// (optim/data_parallel.h), so every rank takes the same step; batch norm uses
// each rank's samples, or all ranks' with --sync-bn. Rank 0 alone prints and
// writes the run directory. --resume needs the same number of ranks; it is
// bit-exact with the same ranks and threads and, with per-rank batch norm,
// the same --checkpoint-every (running statistics are averaged over ranks
// at every checkpoint).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/communicator.h"
#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/run_lock.h"
#include "core/io/snapshots.h"
#include "core/ops/batch_norm_sync.h"
#include "core/ops/loss.h"
#include "core/parallel.h"
#include "core/stop_request.h"
#include "data/data_loader.h"
#include "models/registry.h"
#include "optim/data_parallel.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "pruning/gradual_pruner.h"
#include "tools/common/args.h"
#include "tools/common/datasets.h"
#include "tools/common/evaluate.h"
#include "tools/common/json.h"
#include "tools/common/model_io.h"
#include "tools/common/progress.h"
#include "tools/common/pruning_run.h"
#include "tools/common/recipe.h"
#include "tools/common/report.h"

using namespace spruce;
namespace fs = std::filesystem;

namespace {

struct Settings {
  std::string model = "resnet20", data = "fashion-mnist", data_dir, schedule = "onecycle";
  std::string out, resume, init;
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4, pct_start = 0.25, min_lr = 0.0;
  double gamma = 0.1, warmup_epochs = 0;
  int64_t epochs = 3, batch = 128, crop = 2, seed = 0, threads = default_num_threads();
  int64_t checkpoint_every = 0, max_steps = 0, train_limit = 0, eval_limit = 0, step_epochs = 0;
  int64_t keep_checkpoints = 0;
  bool nesterov = true, flip = true, prefetch = true, overwrite = false, sync_bn = false;
  // Gradual pruning (off when prune_method is empty).
  std::string recipe, prune_method, prune_unit = "epoch";
  int64_t prune_start = 0, prune_end = 0, prune_every = 1, prune_eval_limit = 2000;
  double initial_sparsity = 0.0, final_sparsity = 0.9, finetune_lr = 0.0, update_scale = 1.0;
  double prune_lr_factor = 1.0;
  int64_t sub_steps = 1;
  bool prune_reset_momentum = false, fisher_augment = false, damp_weight_decay = false;
  std::vector<std::string> patterns;
  bool all_layers = false;
  pruning::FisherOptions fisher;
  cli::BnRecalibration bn;
  std::map<std::string, std::string> model_options;  // the model's own (--shortcut, --width)
};

void declare(cli::Args& a, Settings& s) {
  a.add_choice("model", &s.model, models::model_names(), "model architecture");
  cli::add_model_option_flags(a, s.model_options);  // --shortcut, --width, ...: the registry's
  a.add_choice("data", &s.data, cli::dataset_names(), "data set");
  a.add_string("data-dir", &s.data_dir,
               "data set directory (default: the data set's standard place)");
  a.add_int("epochs", &s.epochs, "training epochs", 1);
  a.add_int("batch-size", &s.batch, "mini-batch size", 1);
  a.add_double("lr", &s.lr, "learning rate (the peak for onecycle)", 0, 1e300, true);
  a.add_choice("schedule", &s.schedule, optim::schedule_names(), "learning-rate schedule");
  a.add_double("pct-start", &s.pct_start, "onecycle: fraction of steps spent warming up", 0, 1,
               true, true);
  a.add_double("min-lr", &s.min_lr, "cosine: final learning rate", 0);
  a.add_int("step-epochs", &s.step_epochs, "step: decay every N epochs (0 = at 50% and 75%)", 0);
  a.add_double("gamma", &s.gamma, "step: decay factor", 0, 1, true);
  a.add_double("warmup-epochs", &s.warmup_epochs, "linear warm-up length in epochs (0 = none)", 0);
  a.add_double("momentum", &s.momentum, "SGD momentum", 0, 1, false, true);
  a.add_flag("nesterov", &s.nesterov, "Nesterov momentum");
  a.add_double("weight-decay", &s.weight_decay, "L2 weight decay", 0);
  a.add_int("crop-padding", &s.crop, "random-crop padding in pixels (0 = no crop)", 0, 64);
  a.add_flag("flip", &s.flip, "random horizontal flips");
  a.add_int("seed", &s.seed, "seed for initialisation, shuffling and augmentation", 0);
  a.add_int("threads", &s.threads, "threads for BLAS and our loops", 1, 256);
  a.add_flag("prefetch", &s.prefetch, "prepare the next batch on a background thread");
  a.add_flag("sync-bn", &s.sync_bn,
             "under mpirun: batch-norm statistics over every rank's samples (default: each rank "
             "its own)");
  a.add_string("out", &s.out, "run directory for checkpoints and logs (default: runs/MODEL-DATA)");
  a.add_flag("overwrite", &s.overwrite, "start afresh even if --out already holds a run");
  a.add_string("resume", &s.resume,
               "continue the run in this checkpoint (or run directory) exactly");
  a.add_string("init", &s.init, "start from this checkpoint's weights and masks (fine-tuning)");
  a.add_int("checkpoint-every", &s.checkpoint_every,
            "also checkpoint every N steps (0 = epoch ends only)", 0);
  a.add_int("keep-checkpoints", &s.keep_checkpoints,
            "also keep the last N epoch-end checkpoints as epoch-K.ckpt (0 = only last.ckpt)", 0);
  a.add_int("max-steps", &s.max_steps,
            "stop each epoch after N steps (0 = full epochs; for quick tries)", 0);
  a.add_int("train-limit", &s.train_limit, "train on the first N samples only (0 = all)", 0);
  a.add_int("eval-limit", &s.eval_limit, "evaluate on the first N test samples only (0 = all)", 0);
  a.add_string("recipe", &s.recipe,
               "YAML recipe of flag: value settings (flags given here override it)");
  a.add_string("prune-method", &s.prune_method,
               "gradual pruning with this method "
               "(magnitude|diagfisher|woodfisher[-layer][-summed|-noupdate]); "
               "empty = dense training");
  a.add_choice("prune-unit", &s.prune_unit, {"epoch", "step"},
               "unit of --prune-start/--prune-end/--prune-every");
  a.add_int("prune-start", &s.prune_start,
            "first pruning step (t_0; epoch index from 0, or global step)", 0);
  a.add_int("prune-end", &s.prune_end,
            "last pruning step, where --final-sparsity is reached exactly", 0);
  a.add_int("prune-every", &s.prune_every, "pruning frequency (delta t)", 1);
  a.add_double("initial-sparsity", &s.initial_sparsity, "target at the first pruning step (s_i)", 0,
               1, false, true);
  a.add_double("final-sparsity", &s.final_sparsity, "target at the last pruning step (s_f)", 0, 1,
               false, true);
  a.add_string_list("patterns", &s.patterns,
                    "glob patterns of prunable weights (default: the model's)");
  a.add_flag("all-layers", &s.all_layers, "prune every conv and linear weight");
  cli::add_update_scale_flag(a, s.update_scale);
  cli::add_fisher_flags(a, s.fisher, nullptr, &s.fisher_augment);
  a.add_int("sub-steps", &s.sub_steps,
            "k: each pruning step in k sub-steps, the Fisher recomputed at the current weights "
            "before each",
            1, 1000);
  a.add_flag("damp-weight-decay", &s.damp_weight_decay,
             "add --weight-decay to the Fisher damping lambda (the effective damping of SGD's L2)");
  a.add_flag("prune-reset-momentum", &s.prune_reset_momentum,
             "drop the optimizer's momentum right after each pruning step");
  a.add_double("prune-lr-factor", &s.prune_lr_factor,
               "multiply the learning rate by this in every epoch that holds a pruning step", 0,
               1e300, true);
  cli::add_bn_recalibration_flags(a, s.bn);
  a.add_int("prune-eval-limit", &s.prune_eval_limit,
            "test samples evaluated before/after each pruning step (0 = all)", 0);
  a.add_double("finetune-lr", &s.finetune_lr,
               "after the last pruning step, cosine-decay from this LR (0 = keep the schedule)", 0);
}

/// Per-epoch running sums, saved in mid-epoch checkpoints.
struct EpochStats {
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  double seconds = 0;
};

std::string exact(double d) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%a", d);  // hex float: reads back bit for bit
  return buf;
}

double parse_exact(const io::Checkpoint& ck, const std::string& key) {
  const std::string& v = ck.meta_value(key);
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0')
    throw FormatError(ck.source + ": metadata '" + key + "' is not a number");
  return d;
}

int64_t parse_int(const io::Checkpoint& ck, const std::string& key) {
  return static_cast<int64_t>(parse_exact(ck, key));
}

// "nan", "inf" or "-inf": printf and std::to_string write "-nan" for a NaN
// whose sign bit is set, which reads like a negative number.
std::string non_finite_text(float v) {
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

// Flags a resumed run may change: where and how often it writes, what it
// evaluates for the logs, and where the (same) data lives. Every other flag
// shapes the trajectory (model, data, batches, optimizer, learning-rate
// schedule, pruning) and must keep the value the run was started with.
// --init is read only when a run starts (a resumed run's weights come from
// its checkpoint), so it may name another file or none.
const std::set<std::string> kResumeMayChange = {
    "out",        "resume",           "overwrite",        "recipe",   "prefetch",
    "eval-limit", "prune-eval-limit", "checkpoint-every", "data-dir", "threads",
    "init",       "keep-checkpoints"};

// True when the learning rate at a step does not depend on the total number
// of steps, so --epochs may grow or shrink on --resume: constant, or step
// decay at a fixed interval, without a fine-tuning cosine after pruning.
bool schedule_ignores_total(const Settings& s) {
  return s.finetune_lr == 0 &&
         (s.schedule == "constant" || (s.schedule == "step" && s.step_epochs > 0));
}

/// A setting the user chose for a resumed run: its value, and where it was
/// given ("--name" on the command line, or "recipe FILE: name").
struct Chosen {
  std::string value, where;
};

// --resume continues a run exactly as it was started: refuses (a usage
// error naming the flag, the saved and the given value) every setting given
// on the command line or in a --recipe whose value differs from the one
// saved in the checkpoint, except those of kResumeMayChange and --epochs
// with a schedule that does not depend on the total; warns for --threads,
// which may change the bits.
void check_resume_settings(const std::map<std::string, Chosen>& chosen, const Settings& s,
                           const std::vector<std::pair<std::string, std::string>>& saved,
                           const std::string& ckpt) {
  // --epochs last: whether it may change depends on the others, checked first.
  std::vector<std::pair<std::string, std::string>> ordered;
  for (const auto& kv : saved)
    if (kv.first != "epochs") ordered.push_back(kv);
  for (const auto& kv : saved)
    if (kv.first == "epochs") ordered.push_back(kv);
  for (const auto& [name, was] : ordered) {
    const auto it = chosen.find(name);
    if (it == chosen.end()) continue;
    const std::string& now = it->second.value;
    const std::string& where = it->second.where;
    if (now == was) continue;
    if (name == "threads") {
      std::fprintf(
          stderr,
          "spruce-train: warning: %s %s differs from the run's %s (saved in %s): it continues, "
          "but may not be bit-identical to a run that kept --threads %s\n",
          where.c_str(), now.c_str(), was.c_str(), ckpt.c_str(), was.c_str());
      continue;
    }
    if (kResumeMayChange.count(name)) continue;
    if (name == "epochs") {
      if (schedule_ignores_total(s)) continue;
      throw UsageError(
          where + " " + now + " differs from the run's " + was + " (saved in " + ckpt + "): the " +
          s.schedule + (s.finetune_lr > 0 ? " and fine-tuning" : "") +
          " learning-rate schedule depends on the total number of steps, so the resumed run would "
          "not continue the one started; resume without --epochs, or start a new run with --init " +
          ckpt);
    }
    throw UsageError(
        where + " " + (now.empty() ? "''" : now) + " differs from the run's " +
        (was.empty() ? "''" : was) + " (saved in " + ckpt +
        "): --resume continues a run exactly as it was started, so it may change only --out, "
        "--threads, --prefetch, --eval-limit, --prune-eval-limit, --checkpoint-every, "
        "--keep-checkpoints, --data-dir "
        "and --epochs (for a constant or fixed-interval step schedule); start a new run with "
        "--init " +
        ckpt + " to change it");
  }
}

const char* kCsvHeader =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,epoch_seconds,img_per_s,sparsity\n";

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
  /// (before evaluating and checkpointing; nothing with one rank).
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
  fs::path out_;
  // Gradual pruning (null for dense training); the masks live in the model.
  std::unique_ptr<pruning::GradualPruner> pruner_;
  int64_t finetune_start_step_ = -1;
  std::vector<fs::path> created_dirs_;  // deepest first
  std::unique_ptr<io::RunLock> lock_;
};

// `path` as one shell word: quoted unless it is plain.
std::string shell_word(const std::string& path) {
  const bool plain = !path.empty() && path.find_first_not_of(
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789_./-+=:,@%") == std::string::npos;
  if (plain) return path;
  std::string quoted = "'";
  for (char c : path) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

const char* kPruneCsvHeader =
    "unit,t,epoch,step,target,sparsity,predicted_loss_increase,test_loss_before,test_loss_after,"
    "test_acc_before,test_acc_after,collect_seconds,inverse_seconds\n";

void Run::setup_model_and_data() {
  train_set_ = cli::load_dataset(s_.data, s_.data_dir, true);
  test_set_ = cli::load_dataset(s_.data, s_.data_dir, false);
  train_view_ = train_set_;
  if (s_.train_limit > 0 && s_.train_limit < train_set_->size()) {
    std::vector<int64_t> first(static_cast<size_t>(s_.train_limit));
    for (int64_t i = 0; i < s_.train_limit; ++i) first[i] = i;
    train_view_ = std::make_shared<data::SubsetDataset>(train_set_, std::move(first));
  }
  const auto shape = train_set_->image_shape();
  spec_.name = s_.model;
  spec_.config.in_channels = shape.channels;
  spec_.config.num_classes = train_set_->num_classes();
  spec_.config.options = cli::model_options_for(s_.model, s_.model_options);
  spec_.config.seed = static_cast<uint64_t>(s_.seed);
  model_ = models::build_model(spec_.name, spec_.config);
  if (!s_.init.empty() && s_.resume.empty()) {
    cli::LoadedModel init = cli::load_model(s_.init, spec_);
    if (init.spec.name != spec_.name)
      throw UsageError("--init " + s_.init + " holds a " + init.spec.name + ", not a " +
                       spec_.name);
    model_->load_state_dict(init.module->state_dict());
  }

  setup_pruning();

  data::DataLoaderOptions lo;
  lo.batch_size = s_.batch;
  lo.shuffle = true;
  lo.drop_last = false;
  lo.seed = static_cast<uint64_t>(s_.seed);
  lo.prefetch = s_.prefetch;
  lo.shard = comm_.rank();
  lo.shards = comm_.size();
  if (s_.batch < comm_.size())
    throw UsageError("--batch-size " + std::to_string(s_.batch) + " is smaller than the " +
                     std::to_string(comm_.size()) +
                     " ranks: each rank needs a sample of every batch");
  lo.transforms = cli::train_transforms(s_.data, shape.channels, s_.crop, s_.flip);
  loader_ = std::make_unique<data::DataLoader>(train_view_, lo);
  steps_per_epoch_ = loader_->batches_per_epoch();
  if (s_.max_steps > 0) steps_per_epoch_ = std::min(steps_per_epoch_, s_.max_steps);

  optim::SgdOptions so;
  so.lr = s_.lr;
  so.momentum = s_.momentum;
  so.nesterov = s_.nesterov;
  so.weight_decay = s_.weight_decay;
  if (so.nesterov && so.momentum <= 0) throw UsageError("--nesterov needs --momentum > 0");
  opt_ = std::make_unique<optim::Sgd>(model_->named_parameters(), so);
  averager_ = std::make_unique<optim::GradientAverager>(comm_, model_->named_parameters());
  if (pruner_) {
    const int64_t horizon = s_.prune_unit == "epoch" ? s_.epochs : steps_per_epoch_ * s_.epochs;
    if (s_.prune_end >= horizon)
      throw UsageError("--prune-end " + std::to_string(s_.prune_end) +
                       " must be before the end of training (" + std::to_string(horizon) + " " +
                       s_.prune_unit + "s)");
    if (s_.finetune_lr > 0)
      finetune_start_step_ =
          s_.prune_unit == "epoch" ? s_.prune_end * steps_per_epoch_ : s_.prune_end;
  }

  optim::ScheduleOptions sched;
  sched.lr = s_.lr;
  sched.total_steps = steps_per_epoch_ * s_.epochs;
  sched.min_lr = s_.min_lr;
  sched.gamma = s_.gamma;
  if (s_.step_epochs > 0)
    sched.step_size = s_.step_epochs * steps_per_epoch_;
  else
    sched.milestones = {sched.total_steps / 2, sched.total_steps * 3 / 4};
  sched.warmup_steps =
      static_cast<int64_t>(s_.warmup_epochs * static_cast<double>(steps_per_epoch_));
  sched.one_cycle.pct_start = s_.pct_start;
  schedule_ = optim::make_schedule(s_.schedule, sched);
}

void Run::save_checkpoint(const std::string& name) const {
  if (!comm_.is_root()) return;  // one writer; every rank holds the same state
  io::Checkpoint ck;
  ck.set_meta("kind", "spruce-train");
  for (const auto& [k, v] : args_.values())
    if (k != "resume" && k != "overwrite" && k != "recipe") ck.set_meta("args." + k, v);
  ck.set_meta("train.samples", std::to_string(train_view_->size()));
  ck.set_meta("train.ranks", std::to_string(comm_.size()));
  ck.set_meta("train.epoch", std::to_string(epoch_));
  ck.set_meta("train.batch", std::to_string(batch_in_epoch_));
  ck.set_meta("train.global_step", std::to_string(global_step_));
  ck.set_meta("train.optimizer_steps", std::to_string(opt_->steps()));
  ck.set_meta("train.loss_sum", exact(stats_.loss_sum));
  ck.set_meta("train.correct", std::to_string(stats_.correct));
  ck.set_meta("train.seen", std::to_string(stats_.seen));
  ck.set_meta("train.seconds", exact(stats_.seconds));
  ck.set_meta("log.csv", csv_);
  ck.set_meta("log.jsonl", jsonl_);
  ck.set_meta("log.prune_csv", prune_csv_);
  cli::put_model(ck, spec_, *model_);
  for (const auto& [pname, v] : opt_->state()) ck.set_tensor("optim/" + pname, v);
  io::save_checkpoint((out_ / name).string(), ck);
}

void Run::restore(const io::Checkpoint& ck) {
  // Batches are a function of the sample count; other data would be another run.
  if (ck.has_meta("train.samples") && parse_int(ck, "train.samples") != train_view_->size())
    throw UsageError("the " + s_.data + " training data in " +
                     (s_.data_dir.empty() ? cli::default_data_dir(s_.data) : s_.data_dir) +
                     " has " + std::to_string(train_view_->size()) + " samples, but the run in " +
                     ck.source + " was trained on " + ck.meta_value("train.samples") +
                     "; --resume needs the same data");
  // Each rank trains on its shard of every batch: other ranks, other shards.
  const int64_t ranks = ck.has_meta("train.ranks") ? parse_int(ck, "train.ranks") : 1;
  if (ranks != comm_.size())
    throw UsageError("the run in " + ck.source + " was trained on " + std::to_string(ranks) +
                     " rank(s), this one has " + std::to_string(comm_.size()) +
                     "; --resume needs the same number (mpirun -np " + std::to_string(ranks) +
                     "), or start a new run with --init " + ck.source);
  model_->load_state_dict(cli::model_state_from(ck));
  optim::NamedTensors velocity;
  for (const auto& [name, t] : ck.tensors)
    if (name.rfind("optim/", 0) == 0) velocity.emplace_back(name.substr(6), t);
  opt_->load_state(velocity, parse_int(ck, "train.optimizer_steps"), ck.source);
  epoch_ = parse_int(ck, "train.epoch");
  batch_in_epoch_ = parse_int(ck, "train.batch");
  global_step_ = parse_int(ck, "train.global_step");
  stats_.loss_sum = parse_exact(ck, "train.loss_sum");
  stats_.correct = parse_int(ck, "train.correct");
  stats_.seen = parse_int(ck, "train.seen");
  stats_.seconds = parse_exact(ck, "train.seconds");
  csv_ = ck.meta_value("log.csv");
  jsonl_ = ck.meta_value("log.jsonl");
  prune_csv_ = ck.meta_value("log.prune_csv");
  loader_->seek(epoch_, batch_in_epoch_);
}

void Run::write_logs() const {
  if (!comm_.is_root()) return;
  cli::write_text_file((out_ / "log.csv").string(), csv_);
  cli::write_text_file((out_ / "log.jsonl").string(), jsonl_);
  if (pruner_) cli::write_text_file((out_ / "pruning.csv").string(), prune_csv_);
}

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
      average_running_statistics();
      save_checkpoint("last.ckpt");
    }
    // Ctrl-C: the step is done; save it and stop. At the epoch's last step,
    // end_epoch() evaluates and checkpoints first (main() stops after it).
    if (batch_in_epoch_ < steps_per_epoch_ && StopOnSignal::requested_on_any(world())) {
      average_running_statistics();
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
  average_running_statistics();
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
  std::printf(
      "prune %s %lld: %s to %.2f%% (target %.2f%%), predicted dL %.4f, test loss %.4f -> %.4f, "
      "top-1 %.2f%% -> %.2f%%, %.1fs\n",
      s_.prune_unit.c_str(), static_cast<long long>(t), method.c_str(), 100 * report.sparsity,
      100 * target, report.predicted_loss, before.loss, after.loss, 100 * before.accuracy,
      100 * after.accuracy, report.total_seconds);
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

void Run::average_running_statistics() {
  if (comm_.size() == 1) return;
  optim::NamedTensors stats;
  for (const auto& [name, t] : model_->named_buffers())
    if (name.find("running_") != std::string::npos) stats.emplace_back(name, t);
  optim::average_over_ranks(comm_, stats);
}

void Run::create_run_dir() {
  if (!comm_.is_root()) return;
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = out_; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  fs::create_directories(out_, ec);
  if (ec || !fs::is_directory(out_))
    throw IoError(out_.string() + ": cannot create the run directory: " + ec.message());
  created_dirs_ = std::move(missing);
}

void Run::lock_run_dir() {
  if (!comm_.is_root()) return;  // rank 0 owns the run folder
  if (!lock_) lock_ = std::make_unique<io::RunLock>(out_.string(), "spruce-train");
}

std::string Run::resume_command() const {
  const std::string launcher =
      comm_.size() > 1 ? "mpirun -np " + std::to_string(comm_.size()) + " " : "";
  return launcher + "spruce-train --resume " + shell_word(out_.string());
}

void Run::stop_if_requested() const {
  if (StopOnSignal::requested() == 0) return;
  const std::string at = batch_in_epoch_ == 0 ? "after epoch " + std::to_string(epoch_)
                                              : "at epoch " + std::to_string(epoch_ + 1) +
                                                    " step " + std::to_string(batch_in_epoch_);
  throw Stopped("stopped by " + std::string(StopOnSignal::signal_name()) + " " + at +
                    " (global step " + std::to_string(global_step_) + "), saved in " +
                    (out_ / "last.ckpt").string() + "; continue with: " + resume_command(),
                StopOnSignal::exit_status());
}

void Run::remove_empty_run_dir() {
  lock_.reset();  // its file would keep the folder from being empty
  std::error_code ec;
  // fs::remove deletes a directory only when it is empty.
  for (const fs::path& p : created_dirs_)
    if (fs::is_directory(p, ec) && fs::is_empty(p, ec) && !fs::remove(p, ec)) break;
}

int Run::main() {
  set_num_threads(static_cast<int>(s_.threads));
  out_ = s_.out.empty() ? fs::path("runs") / (s_.model + "-" + s_.data) : fs::path(s_.out);
  std::unique_ptr<io::Checkpoint> resume_ck;
  if (!s_.resume.empty()) {
    fs::path p = s_.resume;
    if (fs::is_directory(p)) p /= "last.ckpt";
    resume_ck = std::make_unique<io::Checkpoint>(io::load_checkpoint(p.string()));
    if (!resume_ck->has_meta("kind") || resume_ck->meta_value("kind") != "spruce-train")
      throw FormatError(p.string() + ": not a spruce-train checkpoint (metadata 'kind' missing)");
    if (s_.out.empty()) out_ = p.parent_path();
  }
  // A folder in use by a live run is refused first, whatever else is asked.
  if (fs::is_directory(out_)) lock_run_dir();
  if (!resume_ck && fs::exists(out_ / "last.ckpt") && !s_.overwrite) {
    throw UsageError(out_.string() +
                     " already holds a run (last.ckpt); continue it with --resume " +
                     out_.string() + ", or pass --overwrite or another --out");
  }
  // Data, model and settings are all checked before the run directory is
  // created, so a bad input leaves nothing behind.
  setup_model_and_data();
  if (resume_ck)
    restore(*resume_ck);
  else
    csv_ = kCsvHeader, prune_csv_ = kPruneCsvHeader;
  // Masked weights stay exactly zero, and so does their momentum. After
  // restore(): a resumed checkpoint may bring masks of its own.
  opt_->set_masks(model_->named_masks());
  // Ctrl-C or SIGTERM from here on: finish the step, checkpoint, exit 130/143.
  StopOnSignal stop(
      "spruce-train: stopping after this step to save a checkpoint (Ctrl-C again to "
      "quit at once)");
  if (StopOnSignal::requested_on_any(world()))
    throw Stopped("stopped by " + std::string(StopOnSignal::signal_name()) +
                      " before training started; nothing written",
                  StopOnSignal::exit_status());
  create_run_dir();
  lock_run_dir();

  std::printf("model  %s, %lld parameters\n", spec_.describe().c_str(),
              static_cast<long long>(model_->num_parameters()));
  std::printf("data   %s: %lld train / %lld test images of %s\n", s_.data.c_str(),
              static_cast<long long>(train_view_->size()),
              static_cast<long long>(test_set_->size()), train_set_->image_shape().str().c_str());
  std::printf(
      "optim  SGD lr %g (%s), momentum %g%s, weight decay %g, batch %lld, %lld steps/epoch, %d "
      "threads\n",
      s_.lr, s_.schedule.c_str(), s_.momentum, s_.nesterov ? " nesterov" : "", s_.weight_decay,
      static_cast<long long>(s_.batch), static_cast<long long>(steps_per_epoch_), num_threads());
  if (comm_.size() > 1)
    std::printf("mpi    %d ranks x %d threads, %lld samples per rank per step, batch norm %s\n",
                comm_.size(), num_threads(),
                static_cast<long long>((s_.batch + comm_.size() - 1) / comm_.size()),
                s_.sync_bn ? "synchronized" : "per rank");
  std::printf("run    %s%s\n", out_.string().c_str(),
              resume_ck ? (" (resumed at epoch " + std::to_string(epoch_ + 1) + " step " +
                           std::to_string(batch_in_epoch_) + ")")
                              .c_str()
                        : "");
  std::fflush(stdout);

  try {
    while (epoch_ < s_.epochs) {
      train_epoch();
      end_epoch();
      if (epoch_ < s_.epochs && StopOnSignal::requested_on_any(world())) stop_if_requested();
    }
    // A run killed between its last checkpoint and the log files, then resumed,
    // trains no more: its logs (saved in the checkpoint) are written here.
    write_logs();
    if (comm_.is_root()) cli::export_npz((out_ / "final.npz").string(), *model_);
  } catch (const IoError& e) {  // e.g. a full disk: say what is kept and how to go on
    if (!fs::exists(out_ / "last.ckpt")) throw;
    throw IoError(std::string(e.what()) + "; the last checkpoint " + (out_ / "last.ckpt").string() +
                  " is kept: continue with " + resume_command());
  }
  std::printf("done: %s/last.ckpt, final.npz, log.csv, log.jsonl\n", out_.string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_tool("spruce-train", [&] {
    Settings s;
    cli::Args args(
        "spruce-train",
        "Trains a model on a data set with SGD; checkpoints every epoch and resumes exactly.");
    declare(args, s);
    if (!args.parse(argc, argv)) return 0;
    std::vector<std::pair<std::string, std::string>> recipe;
    if (!s.recipe.empty()) {
      recipe = cli::read_recipe(s.recipe);
      args.apply_defaults(recipe, s.recipe);
    }
    if (!s.resume.empty()) {
      // What the user chose: flags, then the recipe's settings not overridden by one.
      std::map<std::string, Chosen> chosen;
      for (const auto& [name, value] : args.values())
        if (args.given(name)) chosen[name] = {value, "--" + name};
      for (const auto& [name, value] : recipe)
        if (!args.given(name))
          chosen[name] = {args.value(name), "recipe " + s.recipe + ": " + name};
      // A resumed run keeps every setting it was started with unless given again.
      fs::path p = s.resume;
      // A run folder in use by a live run is refused before its checkpoint is
      // read (the live run may not have written one yet).
      if (world().is_root() && fs::is_directory(p) && (s.out.empty() || fs::path(s.out) == p))
        io::RunLock(p.string(), "spruce-train").release();
      if (fs::is_directory(p)) p /= "last.ckpt";
      const io::Checkpoint ck = io::load_checkpoint(p.string());
      std::vector<std::pair<std::string, std::string>> saved;
      // --out defaults to the checkpoint's folder (the run may have moved).
      for (const auto& [k, v] : ck.meta)
        if (k.rfind("args.", 0) == 0 && k != "args.out") saved.emplace_back(k.substr(5), v);
      args.apply_defaults(saved, p.string());
      check_resume_settings(chosen, s, saved, p.string());
    }
    Run run(s, args);
    try {
      return run.main();
    } catch (...) {
      run.remove_empty_run_dir();
      throw;
    }
  });
}
