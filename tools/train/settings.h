// spruce-train's settings: every flag's value in one struct, the flags that
// set it (declare), and their life in a checkpoint: saved as "args.NAME"
// text with every checkpoint (put_settings) and, on --resume, read back as
// the defaults of the resumed run, refusing any flag given again with a
// value that would change the run's trajectory (apply_resumed_settings).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/parallel.h"
#include "pruning/fisher_options.h"
#include "tools/common/args.h"
#include "tools/common/pruning_run.h"

namespace spruce::train {

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

/// Declares every flag of spruce-train onto `s` (their order is --help's).
void declare(cli::Args& a, Settings& s);

/// Saves every flag's value as metadata "args.NAME" of a checkpoint, except
/// those that only say how this invocation started (--resume, --overwrite,
/// --recipe).
void put_settings(io::Checkpoint& ck, const cli::Args& args);

/// For --resume (s.resume set; `recipe` the settings read from s.recipe):
/// refuses a run folder locked by a live run, then makes the settings saved
/// in the run's checkpoint the defaults of every flag not given, and throws
/// UsageError for a flag given (on the command line or in the recipe) with a
/// value that differs from the saved one, unless the run may change it.
void apply_resumed_settings(cli::Args& args, const Settings& s,
                            const std::vector<std::pair<std::string, std::string>>& recipe);

}  // namespace spruce::train
