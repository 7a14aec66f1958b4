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
#include "pruning/flop_cost.h"
#include "pruning/model_pruning.h"
#include "pruning/woodbury.h"
#include "tools/common/datasets.h"
#include "tools/common/progress.h"
#include "tools/common/report.h"

namespace spruce::cli {

std::string method_grammar() {
  std::string names;
  for (const std::string& name : pruning::pruner_names())
    names += (names.empty() ? "" : "|") + name;
  return names + "[-layer][-summed|-noupdate|-scaleS][-flops]";
}

void add_fisher_flags(Args& args, pruning::FisherOptions& s, int64_t* seed, bool* augment) {
  args.add_int("fisher-samples", &s.samples, "m: Fisher gradients to collect", 1);
  args.add_int("fisher-batch", &s.batch, "b: samples averaged into each gradient (1 = per-sample)",
               1);
  args.add_double("damp", &s.damp, "lambda: Fisher damping", pruning::kMinDamp, pruning::kMaxDamp);
  args.add_int("block-size", &s.block_size,
               "c: WoodFisher block size (>= a layer's size: exact per layer)", 1);
  args.add_double("relative-damp", &s.relative_damp,
                  "WoodFisher: add this x the mean Fisher diagonal entry of each block to lambda "
                  "(damping that follows the Fisher's scale; 0 = off)",
                  0);
  args.add_double("taylor-scale", &s.taylor_scale,
                  "WoodTaylor: scale of the mean gradient's first-order term (1 = the full "
                  "Newton step; see pruning/README.md, WoodTaylor)",
                  0, 1);
  if (seed) args.add_int("fisher-seed", seed, "seed of the Fisher samples", 0);
  if (augment)
    args.add_flag("fisher-augment", augment,
                  "draw the Fisher samples with the training augmentation (random crop, flip)");
}

data::TransformList fisher_transforms(const std::string& data, int64_t channels, bool augment) {
  return augment ? train_transforms(data, channels, 2, true) : eval_transforms(data, channels);
}

void add_update_scale_flag(Args& args, double& scale) {
  args.add_double("update-scale", &scale,
                  "scale of the OBS weight update in [0, 1] (exact and summed; 1 = full, 0 = none) "
                  "for methods that do not name one (-scaleS)",
                  0, 1);
}

void add_bn_recalibration_flags(Args& args, BnRecalibration& s) {
  args.add_int("bn-recalibrate", &s.batches,
               "after pruning, re-estimate batch-norm statistics on N training batches (0 = off)",
               0);
  args.add_int("bn-batch", &s.batch, "samples per batch-norm recalibration batch", 2);
}

double recalibrate_bn(Module& model, std::shared_ptr<const data::Dataset> train,
                      const data::TransformList& transforms, const BnRecalibration& settings,
                      uint64_t seed) {
  if (!settings.enabled()) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  data::DataLoader loader =
      data::make_sample_loader(train, settings.batches, settings.batch, seed, transforms);
  recalibrate_batch_norm(model, settings.batches, [&] { return loader.next().value().images; });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> prunable_patterns(const std::string& model_name,
                                           const std::vector<std::string>& patterns,
                                           bool all_layers) {
  if (all_layers) return {"*"};
  if (!patterns.empty()) return patterns;
  return models::default_prunable_patterns(model_name);
}

PruningSession open_pruning_session(const std::string& model_path, const ModelSpec& npz_spec,
                                    const std::string& data, const std::string& data_dir,
                                    const std::vector<std::string>& patterns, bool all_layers) {
  if (!std::filesystem::exists(model_path)) throw IoError(model_path + ": no such file");
  PruningSession s;
  s.loaded = load_model(model_path, npz_spec);
  s.train = load_dataset(data, data_dir, true);
  s.test = load_dataset(data, data_dir, false);
  check_model_fits_data(s.loaded.spec, *s.train, model_path);
  s.transforms = eval_transforms(data, s.train->image_shape().channels);
  s.set = pruning::attach_masks(*s.loaded.module,
                                prunable_patterns(s.loaded.spec.name, patterns, all_layers));
  return s;
}

void attach_flop_costs(PruningSession& session) {
  const data::ImageShape image = session.train->image_shape();
  pruning::attach_flop_costs(*session.loaded.module, session.set,
                             {image.channels, image.height, image.width});
}

pruning::BatchSource fisher_batches(std::shared_ptr<const data::Dataset> train,
                                    const data::TransformList& transforms,
                                    const pruning::FisherOptions& fisher,
                                    std::function<uint64_t(int64_t)> seed_of) {
  // Shared state: BatchSource is a copyable std::function.
  struct State {
    int64_t calls = 0;
    std::unique_ptr<data::DataLoader> loader;
  };
  auto state = std::make_shared<State>();
  // Under mpirun each rank takes its share of the same m samples.
  const auto [first, last] = shard(fisher.samples, world().rank(), world().size());
  return [=, seed_of = std::move(seed_of)] {
    const int64_t rows = last - first;
    if (state->calls % rows == 0) {
      state->loader = std::make_unique<data::DataLoader>(data::make_sample_loader(
          train, fisher.samples, fisher.batch, seed_of(state->calls / rows), transforms));
      state->loader->seek(0, first);
    }
    ++state->calls;
    auto batch = state->loader->next();
    return std::make_pair(batch->images, batch->labels);
  };
}

pruning::CollectProgress collect_progress(bool show) {
  if (!show) return {};
  auto bar = std::make_shared<std::unique_ptr<ProgressBar>>();
  return [bar](int64_t done, int64_t total) {
    if (!*bar) *bar = std::make_unique<ProgressBar>("fisher", total, "grad/s");
    (*bar)->update(done);
    if (done == total) (*bar)->finish(), bar->reset();
  };
}

pruning::GradientBank collect_gradients(Module& model, const pruning::PrunableSet& set,
                                        std::shared_ptr<const data::Dataset> train,
                                        const data::TransformList& transforms,
                                        const pruning::FisherOptions& fisher, uint64_t seed,
                                        bool progress) {
  const pruning::BatchSource batches =
      fisher_batches(train, transforms, fisher, [seed](int64_t) { return seed; });
  const pruning::CollectProgress show = collect_progress(progress);
  const int64_t rows = pruning::fisher_rows(fisher, &world());
  pruning::GradientBank bank(set.numel(), rows);
  pruning::collect_fisher_gradients(model, set, rows, batches, bank, [&](int64_t i) {
    if (show) show(i, rows);
  });
  return bank;
}

std::vector<pruning::SubStep> prune_one_shot(Module& model, pruning::PrunableSet& set,
                                             const pruning::PruningMethod& method, double sparsity,
                                             int64_t steps,
                                             std::shared_ptr<const data::Dataset> train,
                                             const data::TransformList& transforms,
                                             const pruning::FisherOptions& fisher, int64_t seed,
                                             bool progress) {
  auto pruner = pruning::make_pruner(method, &world());
  // Each step gets fresh samples: the seed moves on with the step.
  const auto batches = fisher_batches(train, transforms, fisher, [seed](int64_t j) {
    return static_cast<uint64_t>(seed) * 1000003ULL + static_cast<uint64_t>(j + 1);
  });
  return pruning::prune_in_steps(model, set, *pruner, method, fisher, sparsity, steps, batches,
                                 collect_progress(progress), &world());
}

void print_prune_report(const pruning::PruneReport& report) {
  std::printf("%-32s %10s %10s %9s %14s\n", "layer", "size", "pruned", "sparsity", "predicted dL");
  for (const auto& l : report.layers)
    std::printf("%-32s %10lld %10lld %8.2f%% %14.6g\n", l.name.c_str(),
                static_cast<long long>(l.size), static_cast<long long>(l.pruned_after),
                100 * l.sparsity, l.predicted_loss);
  std::printf("%-32s %10lld %10lld %8.2f%% %14.6g\n", "total", static_cast<long long>(report.size),
              static_cast<long long>(report.pruned_after), 100 * report.sparsity,
              report.predicted_loss);
  if (report.macs_dense > 0) {
    const double dense = static_cast<double>(report.macs_dense);
    const double model = static_cast<double>(report.model_macs_dense);
    std::printf(
        "MACs per image: prunable %.3fM of %.3fM remain (%.2f%% removed); whole model %.3fM of "
        "%.3fM (%.2f%%)\n",
        static_cast<double>(report.macs_after) / 1e6, dense / 1e6,
        100 * (1 - static_cast<double>(report.macs_after) / dense),
        static_cast<double>(report.model_macs_after) / 1e6, model / 1e6,
        100 * static_cast<double>(report.model_macs_after) / model);
  }
}

}  // namespace spruce::cli
