// spruce-prune: one-shot pruning of a trained checkpoint to a target sparsity
// with any method (pruning/pruner_registry.h), in one step or k steps with the
// Fisher recomputed at the current weights. Writes the pruned checkpoint (with
// masks) and prints what happened: per-layer sparsity, predicted loss
// increase, measured test loss and top-1 before and after, and the time spent
// collecting gradients and inverting the Fisher. With --bn-recalibrate N the
// batch-norm running statistics are re-estimated on N training batches after
// pruning (before the 'after' evaluation; the written checkpoint has them).
// With --flop-aware (or a "-flops" method) the sparsity is the fraction of the
// prunable multiply-adds removed and the report adds the MACs that remain.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/communicator.h"
#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/parallel.h"
#include "core/stop_request.h"
#include "data/data_loader.h"
#include "models/registry.h"
#include "pruning/model_pruning.h"
#include "tools/common/args.h"
#include "tools/common/datasets.h"
#include "tools/common/evaluate.h"
#include "tools/common/json.h"
#include "tools/common/model_io.h"
#include "tools/common/pruning_run.h"
#include "tools/common/report.h"

using namespace spruce;

int main(int argc, char** argv) {
  return cli::run_tool("spruce-prune", [&] {
    std::string model_path, out, npz_out, sparse_out, json_out, method_name = "woodfisher",
                                                                data = "fashion-mnist", data_dir;
    std::vector<std::string> patterns;
    double sparsity = 0.9;
    int64_t steps = 1, threads = default_num_threads(), eval_limit = 0, fisher_seed = 0;
    bool all_layers = false, flop_aware = false;
    pruning::FisherOptions fisher;
    cli::BnRecalibration bn;
    cli::NpzModelFlags npz_model;
    cli::Args args(
        "spruce-prune --checkpoint CKPT --out PRUNED.ckpt",
        "One-shot pruning of a trained model to a target sparsity (magnitude, diagonal Fisher,\n"
        "WoodFisher or WoodTaylor). Methods: " +
            cli::method_grammar() +
            "\n(-layer: independent per-layer selection instead of one global threshold; -summed:\n"
            "the reference's summed single-weight updates; -noupdate; -scaleS: the update scaled\n"
            "by S; -flops: FLOP-aware); e.g. woodfisher-layer-summed.");
    args.add_string("checkpoint", &model_path,
                    "trained checkpoint (.ckpt), compact checkpoint or .npz file to prune");
    args.add_string("out", &out, "where to write the pruned checkpoint (with masks)");
    args.add_string("npz", &npz_out, "also export the pruned weights and masks as .npz");
    args.add_string("sparse-out", &sparse_out,
                    "also write a compact checkpoint: nonzeros + bitmasks (spruce-eval reads it)");
    args.add_string("json", &json_out, "also write the report as JSON");
    args.add_string("method", &method_name, "pruning method");
    double update_scale = 1.0;
    bool fisher_augment = false;
    cli::add_update_scale_flag(args, update_scale);
    args.add_double("sparsity", &sparsity, "target fraction of prunable weights removed", 0, 1,
                    false, true);
    args.add_int("steps", &steps, "prune in k steps, recomputing the Fisher at the current weights",
                 1, 1000);
    args.add_flag(
        "flop-aware", &flop_aware,
        "rank by statistic / multiply-adds per weight; --sparsity is then the fraction of "
        "prunable multiply-adds removed (same as a -flops method)");
    args.add_string_list("patterns", &patterns,
                         "glob patterns of prunable weights (default: the model's)");
    args.add_flag("all-layers", &all_layers, "prune every conv and linear weight");
    cli::add_fisher_flags(args, fisher, &fisher_seed, &fisher_augment);
    cli::add_bn_recalibration_flags(args, bn);
    args.add_choice("data", &data, cli::dataset_names(),
                    "data set (Fisher samples from train, evaluation on test)");
    args.add_string("data-dir", &data_dir,
                    "data set directory (default: the data set's standard place)");
    args.add_int("eval-limit", &eval_limit, "evaluate on the first N test samples only (0 = all)",
                 0);
    args.add_int("threads", &threads, "threads for BLAS and our loops", 1, 256);
    npz_model.add_to(args);
    std::vector<char*> old_spellings = cli::old_model_flag_as_checkpoint(argc, argv);
    if (!args.parse(static_cast<int>(old_spellings.size()), old_spellings.data())) return 0;
    const cli::ModelSpec npz_spec = npz_model.spec();
    if (model_path.empty()) throw UsageError("--checkpoint is required (a trained checkpoint)");
    if (out.empty()) throw UsageError("--out is required (where to write the pruned checkpoint)");
    auto method = pruning::parse_method(method_name, update_scale);
    if (flop_aware) method.target = pruning::Target::kFlops;
    set_num_threads(static_cast<int>(threads));

    cli::PruningSession session =
        cli::open_pruning_session(model_path, npz_spec, data, data_dir, patterns, all_layers);
    const cli::LoadedModel& loaded = session.loaded;
    Module& model = *loaded.module;
    const auto& train = session.train;
    const auto& test = session.test;
    const auto& tf = session.transforms;
    pruning::PrunableSet& set = session.set;
    const bool flops = method.target == pruning::Target::kFlops;
    if (flops) cli::attach_flop_costs(session);

    // Ctrl-C or SIGTERM: stop at the next stage, before writing anything (an
    // output is complete or absent); a signal while writing lets it finish.
    // Installed before the first line is printed: whoever reacts to that line
    // with a signal must find the handler in place.
    StopOnSignal stop("spruce-prune: stopping before writing " + out +
                      " (Ctrl-C again to quit at once)");
    std::printf("model   %s  %s\n", model_path.c_str(), loaded.spec.describe().c_str());
    if (flops)
      std::printf(
          "prune   %s to %.2f%% of %.3fM multiply-adds of %lld weights in %zu layers, %lld "
          "step(s)",
          method.name().c_str(), 100 * sparsity, static_cast<double>(set.dense_macs()) / 1e6,
          static_cast<long long>(set.numel()), static_cast<size_t>(set.size()),
          static_cast<long long>(steps));
    else
      std::printf("prune   %s to %.2f%% of %lld weights in %zu layers, %lld step(s)",
                  method.name().c_str(), 100 * sparsity, static_cast<long long>(set.numel()),
                  static_cast<size_t>(set.size()), static_cast<long long>(steps));
    if (method.pruner != "magnitude")
      std::printf("; Fisher m=%lld b=%lld damp=%g block=%lld",
                  static_cast<long long>(fisher.samples), static_cast<long long>(fisher.batch),
                  fisher.damp, static_cast<long long>(fisher.block_size));
    if (bn.enabled())
      std::printf("; batch norm re-estimated on %lld x %lld samples",
                  static_cast<long long>(bn.batches), static_cast<long long>(bn.batch));
    std::printf("\n");
    std::fflush(stdout);
    auto stop_point = [&] {
      if (StopOnSignal::requested_on_any(world()))
        throw Stopped("stopped by " + std::string(StopOnSignal::signal_name()) +
                          " before writing " + out + "; nothing written",
                      StopOnSignal::exit_status());
    };
    const auto before = cli::evaluate(model, test, tf, 256, eval_limit);
    stop_point();
    const auto steps_done = cli::prune_one_shot(
        model, set, method, sparsity, steps, train,
        cli::fisher_transforms(data, train->image_shape().channels, fisher_augment), fisher,
        fisher_seed);
    stop_point();
    const double bn_seconds = cli::recalibrate_bn(
        model, train, tf, bn, data::derive_seed(static_cast<uint64_t>(fisher_seed), {0xb2ca1}));
    const auto after = cli::evaluate(model, test, tf, 256, eval_limit);
    stop_point();

    std::printf("\n");
    cli::print_prune_report(steps_done.back().report);
    double collect = 0, inverse = 0, total = 0, predicted = 0;
    for (const auto& s : steps_done) {
      collect += s.collect_seconds;
      inverse += s.report.inverse_seconds;
      total += s.report.total_seconds;
      predicted += s.report.predicted_loss;
    }
    std::printf("\n%-8s %10s %8s\n", "", "test loss", "top-1");
    std::printf("%-8s %10.4f %7.2f%%\n", "before", before.loss, 100 * before.accuracy);
    std::printf("%-8s %10.4f %7.2f%%\n", "after", after.loss, 100 * after.accuracy);
    if (std::isnan(predicted))
      std::printf("loss increase: measured %.4f (magnitude pruning predicts none)\n",
                  after.loss - before.loss);
    else
      std::printf("loss increase: measured %.4f, predicted %.4f (quadratic model)\n",
                  after.loss - before.loss, predicted);
    std::printf("time: %.1fs collecting gradients, %.1fs inverting, %.1fs in all", collect, inverse,
                total);
    if (bn.enabled()) std::printf("; %.1fs re-estimating batch norm", bn_seconds);
    std::printf("\n");

    io::Checkpoint ck;
    ck.set_meta("kind", "spruce-pruned");
    ck.set_meta("pruned.method", method.name());
    ck.set_meta("pruned.sparsity", std::to_string(steps_done.back().report.sparsity));
    ck.set_meta("pruned.source", model_path);
    ck.set_meta("pruned.bn_recalibrate", std::to_string(bn.batches));
    cli::put_model(ck, loaded.spec, model);
    io::save_checkpoint(out, ck);
    if (!sparse_out.empty()) {
      const double dense = static_cast<double>(std::filesystem::file_size(out));
      const double compact = static_cast<double>(cli::save_compact(sparse_out, ck));
      std::printf("compact checkpoint %s: %.0f KiB, %.1f%% of %s\n", sparse_out.c_str(),
                  compact / 1024, 100 * compact / dense, out.c_str());
    }
    if (!npz_out.empty()) cli::export_npz(npz_out, model);
    if (!json_out.empty()) {
      cli::Json j = {{"checkpoint", model_path},
                     {"method", method.name()},
                     {"sparsity", sparsity},
                     {"steps", steps},
                     {"fisher_samples", fisher.samples},
                     {"fisher_batch", fisher.batch},
                     {"damp", fisher.damp},
                     {"block_size", fisher.block_size},
                     {"relative_damp", fisher.relative_damp},
                     {"taylor_scale", fisher.taylor_scale},
                     {"update_scale", method.update_scale},
                     {"bn_recalibrate", bn.batches},
                     {"bn_batch", bn.batch},
                     {"bn_seconds", bn_seconds},
                     {"loss_before", before.loss},
                     {"top1_before", before.accuracy},
                     {"loss_after", after.loss},
                     {"top1_after", after.accuracy},
                     {"predicted_loss_increase", predicted},
                     {"collect_seconds", collect},
                     {"inverse_seconds", inverse},
                     {"total_seconds", total},
                     {"layers", cli::Json::array()}};
      if (flops) {
        const auto& r = steps_done.back().report;
        j["target"] = "flops";
        j["macs_dense"] = r.macs_dense;
        j["macs_after"] = r.macs_after;
        j["model_macs_dense"] = r.model_macs_dense;
        j["model_macs_after"] = r.model_macs_after;
      }
      for (const auto& l : steps_done.back().report.layers)
        j["layers"].push_back({{"name", l.name},
                               {"size", l.size},
                               {"pruned", l.pruned_after},
                               {"predicted_loss", l.predicted_loss}});
      cli::write_json_file(json_out, j);
    }
    std::printf("wrote %s\n", out.c_str());
    return 0;
  });
}
