// Pruning a model from the tools: the shared flags for Fisher sampling and
// pruning methods, Fisher-gradient collection on a data set with a progress
// bar, and one-shot pruning in one or k steps. Used by spruce-prune,
// spruce-compare and the gradual schedule of spruce-train.
#pragma once

#include <cstdint>
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
#include "tools/common/args.h"
#include "tools/common/model_io.h"

namespace spruce::cli {

/// How Fisher gradients are sampled and the Fisher is damped/blocked.
struct FisherSettings {
  int64_t samples = 400;    // m: gradients
  int64_t batch = 1;        // b: samples averaged into each gradient
  double damp = 1e-5;       // λ
  int64_t block_size = 100; // c
  int64_t seed = 0;
};

/// Declares --fisher-samples, --fisher-batch, --damp, --block-size (and --fisher-seed when with_seed).
void add_fisher_flags(Args& args, FisherSettings& settings, bool with_seed = true);

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
double recalibrate_bn(Module& model, std::shared_ptr<const data::Dataset> train, const data::TransformList& transforms,
                      const BnRecalibration& settings, uint64_t seed);

/// The prunable-weight patterns chosen on the command line: every conv and
/// linear weight with --all-layers, else --patterns, else the model's default.
std::vector<std::string> prunable_patterns(const std::string& model_name, const std::vector<std::string>& patterns,
                                           bool all_layers);

/// A trained checkpoint ready to prune: the model with masks attached to its
/// prunable weights, the data set's splits and its evaluation transforms.
struct PruningSession {
  LoadedModel loaded;
  std::shared_ptr<data::InMemoryDataset> train, test;
  data::TransformList transforms;
  pruning::PrunableSet set;
};
PruningSession open_pruning_session(const std::string& model_path, const std::string& data,
                                    const std::string& data_dir, const std::vector<std::string>& patterns,
                                    bool all_layers);

/// Collects settings.samples gradients of `set`'s weights on fresh training
/// samples drawn with `seed`, with a progress bar; returns the [m, d] bank.
/// Under mpirun, each rank collects its shard(m) of those samples and returns
/// those rows only (the pruners of prune_one_shot expect exactly that).
pruning::GradientBank collect_gradients(Module& model, const pruning::PrunableSet& set,
                                        std::shared_ptr<const data::Dataset> train,
                                        const data::TransformList& transforms, const FisherSettings& settings,
                                        uint64_t seed, bool progress = true);

/// One-shot pruning to `sparsity` in `steps` equal steps (steps > 1 re-collects
/// the gradients at the current weights before each step). Returns one
/// report per step; collection time is added to each report's total.
struct StepResult {
  pruning::PruneReport report;
  double collect_seconds = 0;
};
std::vector<StepResult> prune_one_shot(Module& model, pruning::PrunableSet& set, const pruning::PruningMethod& method,
                                       double sparsity, int64_t steps, std::shared_ptr<const data::Dataset> train,
                                       const data::TransformList& transforms, const FisherSettings& fisher,
                                       bool progress = true);

/// Prints a per-layer table of a pruning step.
void print_prune_report(const pruning::PruneReport& report);

}  // namespace spruce::cli
