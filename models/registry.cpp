// The registry table: one row per model (name, options, builder, default
// prunable patterns); everything else reads the table.
#include "registry.h"

#include <cmath>
#include <functional>
#include <string>

#include "../core/error.h"
#include "../core/random.h"
#include "mobilenet_v1.h"
#include "resnet.h"

namespace spruce::models {
namespace {

/// A model's options with every default filled in, as the builder reads them.
using Options = std::map<std::string, std::string>;

struct Entry {
  const char* name;
  std::vector<ModelOption> options;
  std::function<std::unique_ptr<Module>(const ModelConfig&, const Options&, Generator&)> build;
  std::vector<std::string> prunable;
};

const ModelOption kShortcut{"shortcut", "B",
                            "ResNet shortcut where the shape changes: A zero-pad, B 1x1 conv + BN"};
const ModelOption kWidth{"width", "1", "MobileNet width multiplier"};

/// The shortcut option as ResNet takes it.
char shortcut_of(const Options& o) {
  const std::string& v = o.at("shortcut");
  if (v != "A" && v != "B") throw UsageError("shortcut: '" + v + "', expected A or B");
  return v[0];
}

/// The width option as MobileNet takes it: a positive finite number.
float width_of(const Options& o) {
  const std::string& v = o.at("width");
  size_t used = 0;
  float w = 0;
  try {
    w = std::stof(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || !(w > 0.f) || !std::isfinite(w))
    throw UsageError("width: '" + v + "', expected a positive number");
  return w;
}

Entry resnet(const char* name, int64_t depth) {
  return {name,
          {kShortcut},
          [depth](const ModelConfig& c, const Options& o, Generator& gen) {
            return std::make_unique<ResNet>(ResNetOptions{.depth = depth,
                                                          .in_channels = c.in_channels,
                                                          .num_classes = c.num_classes,
                                                          .shortcut = shortcut_of(o)},
                                            gen);
          },
          {"layer*.*.conv*.weight"}};
}

const std::vector<Entry>& table() {
  static const std::vector<Entry> entries{
      resnet("resnet20", 20),
      resnet("resnet32", 32),
      resnet("resnet44", 44),
      resnet("resnet56", 56),
      resnet("resnet110", 110),
      {"mobilenet_v1",
       {kWidth},
       [](const ModelConfig& c, const Options& o, Generator& gen) {
         return std::make_unique<MobileNetV1>(
             MobileNetV1Options{
                 .in_channels = c.in_channels, .num_classes = c.num_classes, .width = width_of(o)},
             gen);
       },
       {"conv1.weight", "layers.*.conv*.weight", "linear.weight"}},
  };
  return entries;
}

const Entry& find(const std::string& name) {
  for (const Entry& e : table())
    if (name == e.name) return e;
  std::string valid;
  for (const std::string& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw UsageError("unknown model '" + name + "'; valid models: " + valid);
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const Entry& e : table()) names.emplace_back(e.name);
  return names;
}

std::vector<ModelOption> model_options(const std::string& name) { return find(name).options; }

std::vector<ModelOption> all_model_options() {
  std::vector<ModelOption> all;
  for (const Entry& e : table())
    for (const ModelOption& o : e.options) {
      bool seen = false;
      for (const ModelOption& a : all) seen = seen || a.name == o.name;
      if (!seen) all.push_back(o);
    }
  return all;
}

std::unique_ptr<Module> build_model(const std::string& name, const ModelConfig& config) {
  const Entry& e = find(name);
  Options options;
  for (const ModelOption& o : e.options) options[o.name] = o.default_value;
  for (const auto& [key, value] : config.options) {
    if (!options.count(key)) {
      std::string takes;
      for (const ModelOption& o : e.options) takes += (takes.empty() ? "" : ", ") + o.name;
      throw UsageError(name + " takes no option '" + key +
                       "' (its options: " + (takes.empty() ? "none" : takes) + ")");
    }
    if (!value.empty()) options[key] = value;
  }
  Generator gen(config.seed);
  try {
    return e.build(config, options, gen);
  } catch (const UsageError& err) {
    throw UsageError(name + ": " + err.what());
  }
}

std::vector<std::string> default_prunable_patterns(const std::string& name) {
  return find(name).prunable;
}

}  // namespace spruce::models
