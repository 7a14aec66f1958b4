// spruce-export: writes a checkpoint's (or .npz's) model as an ONNX file for
// ONNX Runtime and other ONNX consumers: the eval-mode graph, batch norms
// folded into the convs unless --keep-batch-norm, pruned weights as zeros
// (models/onnx_export.h). The file is written atomically.
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/autograd.h"
#include "core/error.h"
#include "models/onnx_export.h"
#include "tools/common/args.h"
#include "tools/common/model_io.h"

using namespace spruce;

int main(int argc, char** argv) {
  return cli::run_tool("spruce-export", [&] {
    std::string model_path, out;
    cli::NpzModelFlags npz;
    int64_t image_size = 0;
    bool keep_batch_norm = false;
    cli::Args args(
        "spruce-export --checkpoint PATH --out MODEL.onnx",
        "Exports a model (spruce checkpoint or NumPy .npz) to ONNX (opset 13) for ONNX Runtime:\n"
        "the inference graph with a dynamic batch dimension, batch norms folded into the convs,\n"
        "pruned weights as zeros. Input \"input\" [batch, C, H, W], output \"logits\" [batch, "
        "classes].");
    args.add_string("checkpoint", &model_path, "checkpoint (.ckpt) or .npz file to export");
    args.add_string("out", &out, "where to write the .onnx file");
    args.add_int("image-size", &image_size,
                 "input height and width; 0: 28 for 1-channel models, 32 otherwise", 0);
    args.add_flag("keep-batch-norm", &keep_batch_norm,
                  "write BatchNormalization nodes instead of folding them into the convs");
    npz.add_to(args);
    std::vector<char*> old_spellings = cli::old_model_flag_as_checkpoint(argc, argv);
    if (!args.parse(static_cast<int>(old_spellings.size()), old_spellings.data())) return 0;
    const cli::ModelSpec npz_spec = npz.spec();
    if (model_path.empty())
      throw UsageError("--checkpoint is required (a checkpoint or .npz file)");
    if (out.empty()) throw UsageError("--out is required (the .onnx file to write)");
    if (!std::filesystem::exists(model_path)) throw IoError(model_path + ": no such file");

    cli::LoadedModel loaded = cli::load_model(model_path, npz_spec);
    const int64_t channels = loaded.spec.config.in_channels;
    const int64_t size = image_size > 0 ? image_size : (channels == 1 ? 28 : 32);
    models::OnnxExportOptions options;
    options.fold_batch_norm = !keep_batch_norm;
    const models::OnnxExportSummary s =
        models::export_onnx(*loaded.module, {channels, size, size}, out, options);

    std::printf("model   %s  %s, %lld parameters\n", model_path.c_str(),
                loaded.spec.describe().c_str(),
                static_cast<long long>(loaded.module->num_parameters()));
    std::printf("wrote   %s: ONNX opset %lld (IR version %lld), %lld nodes, %.1f KiB\n",
                out.c_str(), static_cast<long long>(models::kOnnxOpset),
                static_cast<long long>(models::kOnnxIrVersion), static_cast<long long>(s.nodes),
                static_cast<double>(s.bytes) / 1024);
    std::printf("        input \"%s\" [batch, %lld, %lld, %lld], output \"%s\" [batch, %lld]\n",
                options.input_name.c_str(), static_cast<long long>(channels),
                static_cast<long long>(size), static_cast<long long>(size),
                options.output_name.c_str(), static_cast<long long>(s.output_shape.at(0)));
    std::printf("        %lld of %lld parameters in the file are zero (%.1f%%)%s\n",
                static_cast<long long>(s.zero_parameters), static_cast<long long>(s.parameters),
                s.parameters ? 100.0 * static_cast<double>(s.zero_parameters) /
                                   static_cast<double>(s.parameters)
                             : 0.0,
                keep_batch_norm ? "" : "; batch norms folded into the convs");
    // A fixed input anyone can feed to the exported file to see the same
    // numbers (the README's ONNX Runtime example does).
    Tensor probe = Tensor::full({1, channels, size, size}, 0.5f);
    loaded.module->eval();
    Tensor logits;
    {
      NoGradGuard no_grad;
      logits = loaded.module->forward(probe);
    }
    std::printf("check   spruce's logits for an image of 0.5s:");
    for (float v : logits.span()) std::printf(" %.5f", v);
    std::printf("\n");
    return 0;
  });
}
