// The model registry: every built-in model by name, its configuration, and the
// weights a pruner prunes by default.
//
// Names: "resnet20", "resnet32", "resnet44", "resnet56", "resnet110" (CIFAR
// ResNets, models/resnet.h) and "mobilenet_v1" (models/mobilenet_v1.h).
// The registry is a plain table in registry.cpp (no static self-registration,
// which a static library could drop at link time).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../layers/module.h"

namespace spruce::models {

struct ModelConfig {
  int64_t in_channels = 3;  // 1 (MNIST, Fashion-MNIST) or 3 (CIFAR-10)
  int64_t num_classes = 10;
  char shortcut = 'B';  // ResNet shortcut: 'A' zero padding, 'B' 1x1 conv + BN
  float width = 1.f;    // MobileNet width multiplier; ResNets accept only 1
  uint64_t seed = 0;    // seeds the initialisation generator
};

/// Every registered model name, in a fixed order.
std::vector<std::string> model_names();

/// A freshly initialised model (training mode) from Generator(config.seed).
/// An unknown name or an invalid config throws spruce::UsageError; the
/// message for an unknown name lists the valid ones.
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
