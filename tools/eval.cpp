// spruce-eval: evaluates a checkpoint or .npz on a data set's test split:
// loss, top-1, per-class accuracy, confusion matrix and per-layer sparsity.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/parallel.h"
#include "tools/common/args.h"
#include "tools/common/datasets.h"
#include "tools/common/evaluate.h"
#include "tools/common/model_io.h"
#include "tools/common/report.h"

using namespace spruce;

int main(int argc, char** argv) {
  return cli::run_tool("spruce-eval", [&] {
    std::vector<char*> old_spellings = cli::old_model_flag_as_checkpoint(argc, argv);
    std::string model_path, data = "fashion-mnist", data_dir, split = "test", json_out, sparse_out;
    cli::NpzModelFlags npz;
    int64_t batch = 256, threads = default_num_threads(), limit = 0;
    cli::Args args(
        "spruce-eval --checkpoint PATH",
        "Evaluates a model (spruce checkpoint or NumPy .npz) on a data set: loss, top-1 accuracy,\n"
        "per-class accuracy, confusion matrix, and the sparsity of every prunable layer.");
    args.add_string("checkpoint", &model_path, "checkpoint (.ckpt) or .npz file to evaluate");
    args.add_choice("data", &data, cli::dataset_names(), "data set");
    args.add_string("data-dir", &data_dir,
                    "data set directory (default: the data set's standard place)");
    args.add_choice("split", &split, {"test", "train"}, "which split to evaluate on");
    args.add_int("batch-size", &batch, "evaluation batch size", 1);
    args.add_int("eval-limit", &limit, "evaluate only the first N samples (0 = all)", 0);
    args.add_deprecated("limit", "eval-limit");
    args.add_int("threads", &threads, "threads for BLAS and our loops", 1, 256);
    args.add_string("json", &json_out, "also write the results as JSON to this file");
    args.add_string("sparse-out", &sparse_out,
                    "also write the model as a compact checkpoint (nonzeros + bitmasks)");
    npz.add_to(args);
    if (!args.parse(static_cast<int>(old_spellings.size()), old_spellings.data())) return 0;
    const cli::ModelSpec npz_spec = npz.spec();
    if (model_path.empty())
      throw UsageError("--checkpoint is required (a checkpoint or .npz file)");
    if (!std::filesystem::exists(model_path)) throw IoError(model_path + ": no such file");
    set_num_threads(static_cast<int>(threads));

    cli::LoadedModel loaded = cli::load_model(model_path, npz_spec);
    if (!sparse_out.empty()) {
      io::Checkpoint ck;
      cli::put_model(ck, loaded.spec, *loaded.module);
      const double compact = static_cast<double>(cli::save_compact(sparse_out, ck));
      std::printf("compact checkpoint %s: %.0f KiB, %.1f%% of %s\n", sparse_out.c_str(),
                  compact / 1024,
                  100 * compact / static_cast<double>(std::filesystem::file_size(model_path)),
                  model_path.c_str());
    }
    auto dataset = cli::load_dataset(data, data_dir, split == "train");
    cli::check_model_fits_data(loaded.spec, *dataset, model_path);
    std::printf("model   %s  %s, %lld parameters\n", model_path.c_str(),
                loaded.spec.describe().c_str(),
                static_cast<long long>(loaded.module->num_parameters()));
    std::printf(
        "data    %s %s split, %lld samples\n", data.c_str(), split.c_str(),
        static_cast<long long>(limit > 0 ? std::min(limit, dataset->size()) : dataset->size()));
    const auto result =
        cli::evaluate(*loaded.module, dataset,
                      cli::eval_transforms(data, dataset->image_shape().channels), batch, limit);
    const std::string chunks =
        result.chunk > 0 ? ", batches in chunks of " + std::to_string(result.chunk) : "";
    std::printf("time    %lld images in %.2f s, %.0f images/s, %d thread%s%s\n",
                static_cast<long long>(result.samples), result.seconds,
                result.seconds > 0 ? static_cast<double>(result.samples) / result.seconds : 0.0,
                result.threads, result.threads == 1 ? "" : "s", chunks.c_str());
    std::printf("\nloss %.4f   top-1 %.2f%%\n\n", result.loss, 100 * result.accuracy);
    cli::print_class_table(result, dataset->class_names());
    std::printf("\n");
    cli::print_confusion(result);
    const auto sparsity = cli::layer_sparsity(*loaded.module);
    std::printf("\n");
    cli::print_sparsity_table(sparsity);
    if (!json_out.empty())
      cli::write_eval_json(json_out, model_path, result, dataset->class_names(), sparsity);
    return 0;
  });
}
