// Tables and result files.
#include "tools/common/report.h"

#include <cstdio>

#include "core/error.h"
#include "core/io/file.h"
#include "tools/common/json.h"

namespace spruce::cli {

std::vector<LayerSparsity> layer_sparsity(const Module& model) {
  std::vector<LayerSparsity> rows;
  LayerSparsity total{"total", 0, 0, false};
  for (const auto& name : model.prunable_parameter_names()) {
    const Tensor w = model.parameter(name);
    LayerSparsity row{name, w.numel(), 0, model.has_mask(name)};
    for (float v : w.span()) row.zeros += v == 0.f;
    total.size += row.size;
    total.zeros += row.zeros;
    rows.push_back(row);
  }
  rows.push_back(total);
  return rows;
}

void check_model_fits_data(const ModelSpec& spec, const data::Dataset& dataset,
                           const std::string& model_path) {
  const auto shape = dataset.image_shape();
  if (shape.channels != spec.config.in_channels)
    throw UsageError(model_path + ": the model takes " + std::to_string(spec.config.in_channels) +
                     "-channel input but data set " + dataset.name() + " has " +
                     std::to_string(shape.channels) + " channels");
  if (dataset.num_classes() != spec.config.num_classes)
    throw UsageError(model_path + ": the model has " + std::to_string(spec.config.num_classes) +
                     " classes but data set " + dataset.name() + " has " +
                     std::to_string(dataset.num_classes()));
}

void print_class_table(const EvalResult& result, const std::vector<std::string>& class_names) {
  std::printf("%-3s %-14s %8s %9s\n", "#", "class", "samples", "accuracy");
  for (size_t c = 0; c < result.confusion.size(); ++c) {
    int64_t n = 0;
    for (int64_t v : result.confusion[c]) n += v;
    std::printf("%-3zu %-14s %8lld %8.2f%%\n", c,
                c < class_names.size() ? class_names[c].c_str() : "?", static_cast<long long>(n),
                100 * result.class_accuracy(c));
  }
}

void print_confusion(const EvalResult& result) {
  std::printf("confusion matrix (rows: true class, columns: predicted)\n     ");
  for (size_t c = 0; c < result.confusion.size(); ++c) std::printf("%6zu", c);
  std::printf("\n");
  for (size_t r = 0; r < result.confusion.size(); ++r) {
    std::printf("%4zu ", r);
    for (int64_t v : result.confusion[r]) std::printf("%6lld", static_cast<long long>(v));
    std::printf("\n");
  }
}

void print_sparsity_table(const std::vector<LayerSparsity>& rows) {
  std::printf("%-32s %10s %10s %9s %s\n", "prunable weight", "size", "zeros", "sparsity", "");
  for (const auto& r : rows)
    std::printf("%-32s %10lld %10lld %8.2f%% %s\n", r.name.c_str(), static_cast<long long>(r.size),
                static_cast<long long>(r.zeros), 100 * r.sparsity(), r.masked ? "masked" : "");
}

void write_text_file(const std::string& path, const std::string& text) {
  io::AtomicFile file(path);
  file.write(text);
  file.commit();
}

void write_eval_json(const std::string& path, const std::string& model_path,
                     const EvalResult& result, const std::vector<std::string>& class_names,
                     const std::vector<LayerSparsity>& sparsity) {
  Json j = {{"checkpoint", model_path},      {"samples", result.samples},
            {"loss", result.loss},           {"top1", result.accuracy},
            {"seconds", result.seconds},     {"classes", Json::array()},
            {"confusion", result.confusion}, {"sparsity", Json::array()}};
  for (size_t c = 0; c < result.confusion.size(); ++c)
    j["classes"].push_back({{"name", c < class_names.size() ? class_names[c] : std::string("?")},
                            {"accuracy", result.class_accuracy(c)}});
  for (const auto& r : sparsity)
    j["sparsity"].push_back({{"name", r.name}, {"size", r.size}, {"zeros", r.zeros}});
  write_json_file(path, j);
}

}  // namespace spruce::cli
