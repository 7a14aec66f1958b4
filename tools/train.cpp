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
//
// The pieces live in tools/train/: settings.h (the flags and their rules on
// --resume) and run.h (the training run).
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tools/common/args.h"
#include "tools/common/recipe.h"
#include "tools/train/run.h"
#include "tools/train/settings.h"

using namespace spruce;

int main(int argc, char** argv) {
  return cli::run_tool("spruce-train", [&] {
    train::Settings s;
    cli::Args args(
        "spruce-train",
        "Trains a model on a data set with SGD; checkpoints every epoch and resumes exactly.");
    train::declare(args, s);
    if (!args.parse(argc, argv)) return 0;
    std::vector<std::pair<std::string, std::string>> recipe;
    if (!s.recipe.empty()) {
      recipe = cli::read_recipe(s.recipe);
      args.apply_defaults(recipe, s.recipe);
    }
    if (!s.resume.empty()) train::apply_resumed_settings(args, s, recipe);
    train::Run run(s, args);
    try {
      return run.main();
    } catch (...) {
      run.remove_empty_run_dir();
      throw;
    }
  });
}
