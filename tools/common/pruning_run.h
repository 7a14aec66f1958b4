// Pruning a model from the tools: the shared flags for Fisher sampling and
// pruning methods, Fisher-gradient collection on a data set with a progress
// bar, and one-shot pruning in one or k steps. Used by spruce-prune,
// spruce-compare and the gradual schedule of spruce-train.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "layers/module.h"
#include "pruning/fisher_gradients.h"
#include "pruning/prunable_set.h"
#include "pruning/prune_step.h"
#include "pruning/pruner_registry.h"
#include "pruning/stepwise.h"
#include "tools/common/args.h"
#include "tools/common/model_io.h"

namespace spruce::cli {

/// The grammar of a pruning method's name for --help, from the pruner table:
/// "magnitude|diagfisher|woodfisher|woodtaylor[-layer][-summed|-noupdate|-scaleS][-flops]".
std::string method_grammar();

/// Declares --fisher-samples, --fisher-batch, --damp and --block-size onto
/// `fisher` (the library's one Fisher settings struct), and --fisher-seed
/// onto *seed when seed is given.
/// With `augment`, also --fisher-augment (Fisher samples drawn with the
/// training augmentation, fisher_transforms).
void add_fisher_flags(Args& args, pruning::FisherOptions& fisher, int64_t* seed = nullptr,
                      bool* augment = nullptr);

/// The transforms of the Fisher samples for a pruning tool: the evaluation
/// transforms, or with `augment` spruce-train's default training
/// augmentation (random crop with padding 2 and horizontal flips).
data::TransformList fisher_transforms(const std::string& data, int64_t channels, bool augment);

/// Declares --update-scale: the OBS update's scale in [0, 1] for methods
/// whose name gives none (pruning::parse_method).
void add_update_scale_flag(Args& args, double& scale);

/// Re-estimating batch-norm running statistics after pruning (off by default,
/// so results stay comparable with runs made without it).
struct BnRecalibration {
  int64_t batches = 0;  // training batches; 0 = off
  int64_t batch = 128;  // samples per batch
  bool enabled() const { return batches > 0; }
};

/// Declares --bn-recalibrate and --bn-batch.
void add_bn_recalibration_flags(Args& args, BnRecalibration& settings);

/// When enabled, replaces every BatchNorm2d's running mean/var of `model` by
/// their average over settings.batches fresh training batches drawn with
/// `seed` (eval transforms, no augmentation; layers/batch_norm_recalibration.h).
/// Parameters and the model's mode are unchanged. Returns the seconds spent.
double recalibrate_bn(Module& model, std::shared_ptr<const data::Dataset> train,
                      const data::TransformList& transforms, const BnRecalibration& settings,
                      uint64_t seed);

/// The prunable-weight patterns chosen on the command line: every conv and
/// linear weight with --all-layers, else --patterns, else the model's default.
std::vector<std::string> prunable_patterns(const std::string& model_name,
                                           const std::vector<std::string>& patterns,
                                           bool all_layers);

/// A trained checkpoint ready to prune: the model with masks attached to its
/// prunable weights, the data set's splits and its evaluation transforms.
struct PruningSession {
  LoadedModel loaded;
  std::shared_ptr<data::InMemoryDataset> train, test;
  data::TransformList transforms;
  pruning::PrunableSet set;
};
/// `npz_spec` says which model an .npz holds (NpzModelFlags::spec).
PruningSession open_pruning_session(const std::string& model_path, const ModelSpec& npz_spec,
                                    const std::string& data, const std::string& data_dir,
                                    const std::vector<std::string>& patterns, bool all_layers);

/// Measures the FLOP costs of session.set's weights (pruning/flop_cost.h)
/// with one sample of the data set's image shape: what a FLOP-aware method
/// ("-flops", --flop-aware) needs, and what makes reports count multiply-adds.
void attach_flop_costs(PruningSession& session);

/// A source of Fisher mini-batches of fisher.batch fresh training samples
/// (`transforms` applied): sub-step j (0-based, fisher.samples batches each)
/// draws its samples with seed_of(j), so every sub-step is a pure function
/// of its seed. Under mpirun each rank gets its shard(m) of those batches
/// (pruning::fisher_rows per sub-step). The source owns its loaders.
pruning::BatchSource fisher_batches(std::shared_ptr<const data::Dataset> train,
                                    const data::TransformList& transforms,
                                    const pruning::FisherOptions& fisher,
                                    std::function<uint64_t(int64_t)> seed_of);

/// A progress bar "fisher" for gradient collection (none when !show).
pruning::CollectProgress collect_progress(bool show = true);

/// Collects fisher.samples gradients of `set`'s weights on fresh training
/// samples drawn with `seed`, with a progress bar; returns the [m, d] bank.
/// Under mpirun, each rank collects its shard(m) of those samples and returns
/// those rows only (the pruners of prune_one_shot expect exactly that).
pruning::GradientBank collect_gradients(Module& model, const pruning::PrunableSet& set,
                                        std::shared_ptr<const data::Dataset> train,
                                        const data::TransformList& transforms,
                                        const pruning::FisherOptions& fisher, uint64_t seed,
                                        bool progress = true);

/// One-shot pruning to `sparsity` in `steps` sub-steps (pruning/stepwise.h),
/// the samples of sub-step k (from 1) drawn with seed·1000003 + k.
std::vector<pruning::SubStep> prune_one_shot(Module& model, pruning::PrunableSet& set,
                                             const pruning::PruningMethod& method, double sparsity,
                                             int64_t steps,
                                             std::shared_ptr<const data::Dataset> train,
                                             const data::TransformList& transforms,
                                             const pruning::FisherOptions& fisher, int64_t seed,
                                             bool progress = true);

/// Prints a per-layer table of a pruning step; when the set has FLOP costs,
/// then a line of the multiply-adds per image that remain.
void print_prune_report(const pruning::PruneReport& report);

}  // namespace spruce::cli
