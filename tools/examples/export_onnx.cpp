// Example: a pruned model exported to ONNX through the installed library
// (built in CI against the installed package with pkg-config only, so the
// ONNX dependencies in spruce.pc are checked for shared and static links).
//
// Builds ResNet-20 with option-A shortcuts for 1x28x28 images, prunes 80 % of
// its residual convs by magnitude, and writes it to the path given (default:
// model.onnx in the system's temporary folder).
//
// usage: export_onnx [MODEL.onnx]
#include <spruce/models/onnx_export.h>
#include <spruce/models/registry.h>
#include <spruce/pruning/magnitude_pruner.h>
#include <spruce/pruning/model_pruning.h>
#include <spruce/pruning/prune_step.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
  try {
    if (!spruce::models::onnx_export_available()) {
      std::printf("this spruce is built without ONNX export\n");
      return 0;
    }
    spruce::models::ModelConfig config;
    config.in_channels = 1;
    config.options = {{"shortcut", "A"}};
    auto model = spruce::models::build_model("resnet20", config);
    // Global magnitude pruning of the residual convs to 80 % (masks attached to the model).
    auto set = spruce::pruning::attach_masks(*model,
                                             spruce::models::default_prunable_patterns("resnet20"));
    spruce::pruning::MagnitudePruner magnitude;
    spruce::pruning::PruneStepOptions options;
    options.sparsity = 0.8;
    spruce::pruning::prune_step(magnitude, set, nullptr, options);

    const std::string path =
        argc > 1 ? argv[1] : (std::filesystem::temp_directory_path() / "model.onnx").string();
    const auto summary = spruce::models::export_onnx(*model, {1, 28, 28}, path);
    std::printf("wrote %s: %lld nodes, %lld of %lld parameters zero\n", path.c_str(),
                static_cast<long long>(summary.nodes),
                static_cast<long long>(summary.zero_parameters),
                static_cast<long long>(summary.parameters));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_onnx: error: %s\n", e.what());
    return 1;
  }
}
