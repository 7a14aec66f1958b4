// spruce-train's settings: the flags (declare), their checkpoint metadata
// (put_settings) and the rules for changing them on --resume
// (apply_resumed_settings); see settings.h.
#include "tools/train/settings.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include "core/communicator.h"
#include "core/error.h"
#include "core/io/run_lock.h"
#include "models/registry.h"
#include "optim/schedule.h"
#include "tools/common/datasets.h"
#include "tools/common/pruning_run.h"

namespace spruce::train {

namespace fs = std::filesystem;

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
  a.add_string(
      "prune-method", &s.prune_method,
      "gradual pruning with this method (" + cli::method_grammar() + "); empty = dense training");
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

void put_settings(io::Checkpoint& ck, const cli::Args& args) {
  for (const auto& [k, v] : args.values())
    if (k != "resume" && k != "overwrite" && k != "recipe") ck.set_meta("args." + k, v);
}

namespace {

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

}  // namespace

void apply_resumed_settings(cli::Args& args, const Settings& s,
                            const std::vector<std::pair<std::string, std::string>>& recipe) {
  // What the user chose: flags, then the recipe's settings not overridden by one.
  std::map<std::string, Chosen> chosen;
  for (const auto& [name, value] : args.values())
    if (args.given(name)) chosen[name] = {value, "--" + name};
  for (const auto& [name, value] : recipe)
    if (!args.given(name)) chosen[name] = {args.value(name), "recipe " + s.recipe + ": " + name};
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

}  // namespace spruce::train
