// ONNX export in a build without it (Meson option onnx disabled, or
// libonnx-dev / libprotobuf-dev not found): the functions of
// models/onnx_export.h exist, so programs link either way, and say why they
// cannot export.
#include "../core/error.h"
#include "onnx_export.h"

namespace spruce::models {
namespace {
[[noreturn]] void unavailable() {
  throw Error(
      "ONNX export is not built into this spruce: install libonnx-dev and libprotobuf-dev "
      "(tools/install-deps.sh does), then reconfigure (meson setup --reconfigure BUILD "
      "-Donnx=enabled)");
}
}  // namespace

bool onnx_export_available() { return false; }

std::string onnx_model_bytes(const Module&, const std::vector<int64_t>&, const OnnxExportOptions&,
                             OnnxExportSummary*) {
  unavailable();
}

OnnxExportSummary export_onnx(const Module&, const std::vector<int64_t>&, const std::string&,
                              const OnnxExportOptions&) {
  unavailable();
}

}  // namespace spruce::models
