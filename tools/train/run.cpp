// spruce-train's run: setting up model, data, optimizer, schedule and
// pruner from the settings, its run folder (created, locked, removed again
// when a failed run left it empty), stopping on Ctrl-C, and Run::main(),
// which resumes or starts the run and trains it to the last epoch.
#include "tools/train/run.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/parallel.h"
#include "core/stop_request.h"
#include "models/registry.h"
#include "tools/common/datasets.h"
#include "tools/common/report.h"

namespace spruce::train {

namespace fs = std::filesystem;

namespace {

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

}  // namespace

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
    start_logs();
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

}  // namespace spruce::train
