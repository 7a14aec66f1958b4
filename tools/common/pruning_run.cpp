// Fisher collection and one-shot pruning for the tools.
#include "tools/common/pruning_run.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/communicator.h"
#include "core/error.h"
#include "data/data_loader.h"
#include "layers/batch_norm_recalibration.h"
#include "models/registry.h"
#include "pruning/model_pruning.h"
#include "pruning/woodbury.h"
#include "tools/common/datasets.h"
#include "tools/common/progress.h"
#include "tools/common/report.h"

namespace spruce::cli {

void add_fisher_flags(Args& args, FisherSettings& s, bool with_seed) {
  args.add_int("fisher-samples", &s.samples, "m: Fisher gradients to collect", 1);
  args.add_int("fisher-batch", &s.batch, "b: samples averaged into each gradient (1 = per-sample)", 1);
  args.add_double("damp", &s.damp, "lambda: Fisher damping", pruning::kMinDamp, pruning::kMaxDamp);
  args.add_int("block-size", &s.block_size, "c: WoodFisher block size (>= a layer's size: exact per layer)", 1);
  if (with_seed) args.add_int("fisher-seed", &s.seed, "seed of the Fisher samples", 0);
}

void add_bn_recalibration_flags(Args& args, BnRecalibration& s) {
  args.add_int("bn-recalibrate", &s.batches,
               "after pruning, re-estimate batch-norm statistics on N training batches (0 = off)", 0);
  args.add_int("bn-batch", &s.batch, "samples per batch-norm recalibration batch", 2);
}

double recalibrate_bn(Module& model, std::shared_ptr<const data::Dataset> train, const data::TransformList& transforms,
                      const BnRecalibration& settings, uint64_t seed) {
  if (!settings.enabled()) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  data::DataLoader loader = data::make_sample_loader(train, settings.batches, settings.batch, seed, transforms);
  recalibrate_batch_norm(model, settings.batches, [&] { return loader.next().value().images; });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> prunable_patterns(const std::string& model_name, const std::vector<std::string>& patterns,
                                           bool all_layers) {
  if (all_layers) return {"*"};
  if (!patterns.empty()) return patterns;
  return models::default_prunable_patterns(model_name);
}

PruningSession open_pruning_session(const std::string& model_path, const std::string& data,
                                    const std::string& data_dir, const std::vector<std::string>& patterns,
                                    bool all_layers) {
  if (!std::filesystem::exists(model_path)) throw IoError(model_path + ": no such file");
  PruningSession s;
  s.loaded = load_model(model_path, {});
  s.train = load_dataset(data, data_dir, true);
  s.test = load_dataset(data, data_dir, false);
  check_model_fits_data(s.loaded.spec, *s.train, model_path);
  s.transforms = eval_transforms(data, s.train->image_shape().channels);
  s.set = pruning::attach_masks(*s.loaded.module, prunable_patterns(s.loaded.spec.name, patterns, all_layers));
  return s;
}

pruning::GradientBank collect_gradients(Module& model, const pruning::PrunableSet& set,
                                        std::shared_ptr<const data::Dataset> train,
                                        const data::TransformList& transforms, const FisherSettings& settings,
                                        uint64_t seed, bool progress) {
  data::DataLoader loader = data::make_sample_loader(train, settings.samples, settings.batch, seed, transforms);
  // Under mpirun each rank takes its share of the same m samples.
  const auto [first, last] = shard(settings.samples, world().rank(), world().size());
  loader.seek(0, first);
  pruning::GradientBank bank(set.numel(), last - first);
  ProgressBar bar("fisher", last - first, "grad/s");
  pruning::collect_fisher_gradients(
      model, set, last - first,
      [&] {
        auto batch = loader.next();
        return std::make_pair(batch->images, batch->labels);
      },
      bank, [&](int64_t i) {
        if (progress) bar.update(i);
      });
  if (progress) bar.finish();
  return bank;
}

std::vector<StepResult> prune_one_shot(Module& model, pruning::PrunableSet& set, const pruning::PruningMethod& method,
                                       double sparsity, int64_t steps, std::shared_ptr<const data::Dataset> train,
                                       const data::TransformList& transforms, const FisherSettings& fisher,
                                       bool progress) {
  auto pruner = pruning::make_pruner(method, &world());
  std::vector<StepResult> results;
  const double start = static_cast<double>(set.pruned_count()) / static_cast<double>(set.numel());
  for (int64_t k = 1; k <= steps; ++k) {
    StepResult r;
    pruning::GradientBank bank(set.numel());
    if (pruner->needs_fisher()) {
      const auto t0 = std::chrono::steady_clock::now();
      // Each step gets fresh samples: the seed moves on with the step.
      bank = collect_gradients(model, set, train, transforms, fisher,
                               static_cast<uint64_t>(fisher.seed) * 1000003ULL + static_cast<uint64_t>(k), progress);
      r.collect_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    pruning::PruneStepOptions options;
    options.sparsity = k == steps ? sparsity : start + (sparsity - start) * static_cast<double>(k) / static_cast<double>(steps);
    options.selection = method.selection;
    options.fisher.damp = fisher.damp;
    options.fisher.block_size = fisher.block_size;
    r.report = pruning::prune_step(*pruner, set, pruner->needs_fisher() ? &bank : nullptr, options);
    r.report.total_seconds += r.collect_seconds;
    results.push_back(std::move(r));
  }
  return results;
}

void print_prune_report(const pruning::PruneReport& report) {
  std::printf("%-32s %10s %10s %9s %14s\n", "layer", "size", "pruned", "sparsity", "predicted dL");
  for (const auto& l : report.layers)
    std::printf("%-32s %10lld %10lld %8.2f%% %14.6g\n", l.name.c_str(), static_cast<long long>(l.size),
                static_cast<long long>(l.pruned_after), 100 * l.sparsity, l.predicted_loss);
  std::printf("%-32s %10lld %10lld %8.2f%% %14.6g\n", "total", static_cast<long long>(report.size),
              static_cast<long long>(report.pruned_after), 100 * report.sparsity, report.predicted_loss);
}

}  // namespace spruce::cli
