// The registry table: name -> depth or builder, plus default prunable patterns.
#include "registry.h"

#include "../core/error.h"
#include "../core/random.h"
#include "mobilenet_v1.h"
#include "resnet.h"

namespace spruce::models {
namespace {
struct ResNetEntry {
  const char* name;
  int64_t depth;
};
constexpr ResNetEntry kResNets[] = {
    {"resnet20", 20}, {"resnet32", 32}, {"resnet44", 44}, {"resnet56", 56}, {"resnet110", 110}};
constexpr const char* kMobileNet = "mobilenet_v1";

const ResNetEntry* find_resnet(const std::string& name) {
  for (const ResNetEntry& e : kResNets)
    if (name == e.name) return &e;
  return nullptr;
}

[[noreturn]] void unknown(const std::string& name) {
  std::string valid;
  for (const std::string& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw UsageError("unknown model '" + name + "'; valid models: " + valid);
}
}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const ResNetEntry& e : kResNets) names.emplace_back(e.name);
  names.emplace_back(kMobileNet);
  return names;
}

std::unique_ptr<Module> build_model(const std::string& name, const ModelConfig& config) {
  Generator gen(config.seed);
  if (const ResNetEntry* e = find_resnet(name)) {
    if (config.width != 1.f)
      throw UsageError(name + ": the width multiplier applies to mobilenet_v1 only, got " +
                       std::to_string(config.width));
    return std::make_unique<ResNet>(ResNetOptions{.depth = e->depth,
                                                  .in_channels = config.in_channels,
                                                  .num_classes = config.num_classes,
                                                  .shortcut = config.shortcut},
                                    gen);
  }
  if (name == kMobileNet)
    return std::make_unique<MobileNetV1>(MobileNetV1Options{.in_channels = config.in_channels,
                                                            .num_classes = config.num_classes,
                                                            .width = config.width},
                                         gen);
  unknown(name);
}

std::vector<std::string> default_prunable_patterns(const std::string& name) {
  if (find_resnet(name)) return {"layer*.*.conv*.weight"};
  if (name == kMobileNet) return {"conv1.weight", "layers.*.conv*.weight", "linear.weight"};
  unknown(name);
}

}  // namespace spruce::models
