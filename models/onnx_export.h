// ONNX export of a model's inference graph, for deployment in ONNX Runtime
// (or any ONNX consumer) without spruce.
//
// The exporter walks the module tree and writes what each module's forward
// computes in eval mode (batch norm with its running statistics), whatever
// mode the module is in. It knows the built-in models (ResNet and its
// BasicBlock with option-A or option-B shortcuts, MobileNetV1 and its
// DepthwiseSeparableBlock) and the plain layers a user chains in a
// Sequential: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d,
// GlobalAvgPool2d, Flatten, Linear. Any other module is refused with one line
// naming it (its dotted name and type).
//
// The file is an ONNX ModelProto of opset 13, IR version 7 (ONNX 1.8 and
// later, every ONNX Runtime since 1.6), written with Debian's ONNX schema
// classes (libonnx-dev) and protobuf. Ops: Conv, BatchNormalization (only
// with fold_batch_norm off, or for a batch norm that follows no conv), Relu,
// Add, Slice + Pad (the option-A shortcut: every second row and column, zero
// channels on both sides), MaxPool, AveragePool, GlobalAveragePool, Flatten,
// Gemm. The batch dimension is symbolic ("batch"); the sample shape is fixed.
//
// Pruned weights: the initializers are dense tensors holding weight * mask,
// so pruned weights are exact zeros (the sparsity is in the values, the file
// is not smaller). Folding a batch norm into its conv scales each output
// channel, which keeps those zeros.
//
// The export is optional at build time (Meson option onnx): in a build
// without it onnx_export_available() is false and the functions below throw
// spruce::Error saying so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../layers/module.h"

namespace spruce::models {

struct OnnxExportOptions {
  /// Each batch norm that directly follows a conv is folded into that conv's
  /// weight and bias (computed in double): fewer nodes and the graph PyTorch's
  /// eval-mode export writes. false keeps BatchNormalization nodes whose
  /// initializers carry the state_dict names ("layer1.0.bn1.running_mean").
  bool fold_batch_norm = true;
  /// Names of the graph's input and output values.
  std::string input_name = "input";
  std::string output_name = "logits";
};

/// What an export wrote.
struct OnnxExportSummary {
  std::vector<int64_t> output_shape;  // per sample (batch excluded), e.g. {10}
  int64_t nodes = 0;
  int64_t parameters = 0;       // elements of the float initializers
  int64_t zero_parameters = 0;  // of which exactly zero (pruned weights among them)
  uint64_t bytes = 0;           // size of the serialized model
};

/// The ONNX opset and IR version of every exported file.
inline constexpr int64_t kOnnxOpset = 13;
inline constexpr int64_t kOnnxIrVersion = 7;

/// True when this build of spruce has the ONNX export (libonnx-dev and
/// libprotobuf-dev were found by Meson).
bool onnx_export_available();

/// The eval-mode graph of `model` as a serialized ONNX ModelProto: input
/// [batch, sample_shape...] (e.g. sample_shape {3, 32, 32}), output [batch,
/// classes]. Throws spruce::UsageError naming the module when a module is not
/// supported or does not fit the shape reaching it, and spruce::Error in a
/// build without ONNX. `summary`, when given, is filled in.
std::string onnx_model_bytes(const Module& model, const std::vector<int64_t>& sample_shape,
                             const OnnxExportOptions& options = {},
                             OnnxExportSummary* summary = nullptr);

/// onnx_model_bytes() written to `path` atomically (io::AtomicFile: a
/// temporary file renamed into place, so `path` is either the previous file or
/// the whole new one). Also throws spruce::IoError naming the path.
OnnxExportSummary export_onnx(const Module& model, const std::vector<int64_t>& sample_shape,
                              const std::string& path, const OnnxExportOptions& options = {});

}  // namespace spruce::models
