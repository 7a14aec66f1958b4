// Human-readable tables and JSON files shared by the tools: per-class
// accuracy, confusion matrix, per-layer sparsity.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"
#include "layers/module.h"
#include "tools/common/evaluate.h"
#include "tools/common/model_io.h"

namespace spruce::cli {

struct LayerSparsity {
  std::string name;
  int64_t size = 0;
  int64_t zeros = 0;
  bool masked = false;
  double sparsity() const {
    return size ? static_cast<double>(zeros) / static_cast<double>(size) : 0.0;
  }
};

/// Every prunable weight (conv and linear) with its count of exact zeros, and
/// a last row "total" over them all.
std::vector<LayerSparsity> layer_sparsity(const Module& model);

/// UsageError when the model's input channels or classes do not match the data.
void check_model_fits_data(const ModelSpec& spec, const data::Dataset& dataset,
                           const std::string& model_path);

void print_class_table(const EvalResult& result, const std::vector<std::string>& class_names);
void print_confusion(const EvalResult& result);
void print_sparsity_table(const std::vector<LayerSparsity>& rows);

/// Writes text to a file atomically (temporary file + rename); IoError on failure.
void write_text_file(const std::string& path, const std::string& text);
void write_eval_json(const std::string& path, const std::string& model_path,
                     const EvalResult& result, const std::vector<std::string>& class_names,
                     const std::vector<LayerSparsity>& sparsity);

}  // namespace spruce::cli
