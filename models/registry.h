// The model registry: every built-in model by name, the options it takes, and
// the weights a pruner prunes by default.
//
// Names: "resnet20", "resnet32", "resnet44", "resnet56", "resnet110" (CIFAR
// ResNets, models/resnet.h) and "mobilenet_v1" (models/mobilenet_v1.h).
// The registry is a plain table in registry.cpp (no static self-registration,
// which a static library could drop at link time): adding a model is its file
// pair and one row there. A model's own options (ResNet's shortcut,
// MobileNet's width) are named text in ModelConfig::options, declared by its
// row, so tools offer them as flags, recipes as keys and checkpoints store
// them as metadata without knowing any model.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../layers/module.h"

namespace spruce::models {

struct ModelConfig {
  int64_t in_channels = 3;  // 1 (MNIST, Fashion-MNIST) or 3 (CIFAR-10)
  int64_t num_classes = 10;
  uint64_t seed = 0;  // seeds the initialisation generator
  /// The model's own options by name, as text (e.g. {"shortcut", "A"},
  /// {"width", "0.5"}); one the model takes but that is absent or empty here
  /// has its default (model_options()).
  std::map<std::string, std::string> options = {};
};

/// An option some model takes: the tools' flag --<name>, the checkpoint's
/// metadata "model.<name>".
struct ModelOption {
  std::string name;
  std::string default_value;
  std::string help;
};

/// Every registered model name, in a fixed order.
std::vector<std::string> model_names();

/// The options model `name` takes; UsageError for an unknown name.
std::vector<ModelOption> model_options(const std::string& name);

/// Every option of every model, each name once, in table order (for flags).
std::vector<ModelOption> all_model_options();

/// A freshly initialised model (training mode) from Generator(config.seed).
/// An unknown name, an option the model does not take, or an invalid config
/// throws spruce::UsageError naming the model and the option; the message for
/// an unknown name lists the valid ones.
std::unique_ptr<Module> build_model(const std::string& name, const ModelConfig& config = {});

/// Glob patterns (see glob_match) selecting the weights a pruner prunes by
/// default, after the WoodFisher reference:
///   ResNets: {"layer*.*.conv*.weight"}, the convs inside the residual blocks
///     (18 for ResNet-20); the first conv, the shortcut convs and fc stay dense.
///   mobilenet_v1: {"conv1.weight", "layers.*.conv*.weight", "linear.weight"},
///     every conv and the classifier (configs/mobilenetv1.yaml prunes model.0.0,
///     every block's depthwise and pointwise conv, and fc).
/// An unknown name throws spruce::UsageError.
std::vector<std::string> default_prunable_patterns(const std::string& name);

}  // namespace spruce::models
