// The `models` section of spruce-bench: training-step and inference
// throughput and peak memory of the registry's models, every run of a
// configuration in a fresh process (the bench re-executes itself with the
// hidden --child flag), so that ru_maxrss is that configuration's own peak.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/common/json.h"

namespace spruce::bench {

/// One configuration: a model at an input shape, and how long to time it.
struct ChildSpec {
  std::string model;
  std::string shape;
  int64_t batch = 128, threads = 1, iters = 10, infer_iters = 10, warmup = 3;
};

/// Runs one configuration in this process and prints "RESULT key=value ..."
/// for the parent (the --child mode).
int run_child(const ChildSpec& c);

/// Times every model at every shape (`base` gives the rest of each
/// configuration), `runs` fresh processes each; prints the table to stdout
/// and returns its rows as the JSON "models" array.
cli::Json run_models_section(const std::vector<std::string>& models,
                             const std::vector<std::string>& shapes, const ChildSpec& base,
                             int64_t runs);

}  // namespace spruce::bench
