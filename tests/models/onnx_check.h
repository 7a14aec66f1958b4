// Checking exported ONNX files outside spruce, for the ONNX export tests
// (tests/models/test_onnx_export.cpp, tests/tools/test_export.cpp):
//   - onnx.checker.check_model(full_check=True) in /usr/bin/python3 (Debian's
//     python3-onnx; the `python3` on PATH may be another one without onnx);
//   - ONNX Runtime through node and the npm package onnxruntime-node, run by
//     tests/models/onnx_run.js (its path is SPRUCE_ONNX_RUN_JS, a compile
//     definition). The node_modules folder holding onnxruntime-node comes from
//     SPRUCE_ORT_NODE_MODULES (meson sets it from the option onnxruntime_node),
//     node from SPRUCE_NODE (meson's find_program) or PATH.
// Each check says why it cannot run here, for the skip message.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/onnx_export.h"
#include "tests/test_util.h"

namespace spruce::test {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

/// " 's'": `s` as one more argument of a shell command. Commands are built
/// by appending std::strings: GCC 12 warns (falsely, -Wrestrict) about
/// `"literal" + std::string`.
inline std::string arg(const std::string& s) {
  std::string q = " '";
  q += s;
  q += '\'';
  return q;
}

/// Why onnx.checker cannot run here, or "" when it can.
inline std::string onnx_checker_missing() {
  if (!models::onnx_export_available()) return "spruce is built without ONNX export";
  if (std::system("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") != 0)
    return "/usr/bin/python3 cannot import onnx (python3-onnx)";
  return "";
}

/// Why ONNX Runtime cannot run here, or "" when it can.
inline std::string onnx_runtime_missing() {
  if (!models::onnx_export_available()) return "spruce is built without ONNX export";
  const std::string modules = env_or("SPRUCE_ORT_NODE_MODULES", "");
  if (modules.empty())
    return "no onnxruntime-node: set meson option onnxruntime_node (or SPRUCE_ORT_NODE_MODULES) "
           "to a node_modules folder holding it";
  const std::string node = env_or("SPRUCE_NODE", "node");
  std::string version = arg(node);
  version += " --version >/dev/null 2>&1";
  if (std::system(version.c_str()) != 0) return "node not found: " + node;
  std::string probe = arg(node);
  probe += " -e \"require(require('path').resolve(";
  probe += arg(modules);
  probe += ", 'onnxruntime-node'))\" >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) return "node cannot load onnxruntime-node from " + modules;
  return "";
}

/// Runs onnx.checker (full check: every shape inferred, strict) on each file
/// and checks the inferred output is [batch, classes]; the script's output
/// is shown, a failure fails the test.
inline void check_with_onnx_checker(const TempDir& dir, const std::vector<std::string>& files,
                                    int64_t classes = 10) {
  std::ofstream(dir.file("check.py")) << R"(
import sys, onnx
classes = int(sys.argv[1])
for path in sys.argv[2:]:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    dims = [d.dim_param or d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ['batch', classes], dims
    print('checked', path.rsplit('/', 1)[-1], 'opset', model.opset_import[0].version, 'output', dims)
)";
  std::string cmd = "/usr/bin/python3";
  cmd += arg(dir.file("check.py")) + arg(std::to_string(classes));
  for (const std::string& f : files) cmd += arg(f);
  cmd += " >";
  cmd += arg(dir.file("check.log"));
  cmd += " 2>&1";
  const int rc = std::system(cmd.c_str());
  MESSAGE(read_text(dir.file("check.log")));
  CHECK(rc == 0);
}

/// One model run in ONNX Runtime: `input` [N, C, H, W] through `model`.
struct OrtJob {
  std::string model;
  Tensor input;
};

/// The first output of each job, as flat floats (REQUIREs that node succeeded).
inline std::vector<std::vector<float>> run_in_onnx_runtime(const TempDir& dir,
                                                           const std::vector<OrtJob>& jobs) {
  std::string cmd = arg(env_or("SPRUCE_NODE", "node")) + arg(SPRUCE_ONNX_RUN_JS) +
                    arg(env_or("SPRUCE_ORT_NODE_MODULES", ""));
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Tensor& x = jobs[i].input;
    const std::string in = dir.file("ort" + std::to_string(i) + ".in");
    std::ofstream f(in, std::ios::binary);
    f.write(reinterpret_cast<const char*>(x.data()),
            static_cast<std::streamsize>(x.numel() * sizeof(float)));
    REQUIRE(f.good());
    std::string shape;
    for (int64_t d : x.shape()) {
      if (!shape.empty()) shape += ',';
      shape += std::to_string(d);
    }
    cmd += arg(jobs[i].model) + arg(in) + arg(shape) +
           arg(dir.file("ort" + std::to_string(i) + ".out"));
  }
  cmd += " 2>";
  cmd += arg(dir.file("node.log"));
  const int rc = std::system(cmd.c_str());
  if (rc != 0) MESSAGE(read_text(dir.file("node.log")));
  REQUIRE(rc == 0);
  std::vector<std::vector<float>> outputs;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const std::vector<uint8_t> bytes = read_bytes(dir.file("ort" + std::to_string(i) + ".out"));
    std::vector<float>& v = outputs.emplace_back(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  }
  return outputs;
}

/// max |a - b| over all elements (infinity when the sizes differ).
inline double max_abs_difference(const std::vector<float>& a, const Tensor& b) {
  if (a.size() != static_cast<size_t>(b.numel())) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i)
    d = std::max(d, std::abs(static_cast<double>(a[i]) - b.span()[i]));
  return d;
}

}  // namespace spruce::test
