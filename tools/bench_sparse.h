// The `sparse` section of spruce-bench: dense against sparse inference of
// ResNet-20 B and MobileNetV1 pruned by global magnitude, and the layer
// crossovers that ops::sparse_conv_max_density documents.
#pragma once

#include <string>

#include "tools/common/json.h"

namespace spruce::bench {

struct SparseSettings {
  std::string resnet = "tools/results/resnet20b-fmnist-dense-15/last.ckpt";
  std::string mobilenet = "tools/results/mobilenet-fmnist-dense-15/final.npz";
  int64_t batch = 128;
  int64_t pairs = 5;    // alternated dense/sparse pairs per figure
  int64_t iters = 5;    // timed batches per side of a pair
  int64_t single = 40;  // timed batch-1 images per side of a pair
  bool quick = false;   // pairs 3, iters 2, single 10, fewer crossover points
};

/// Prints the tables to stdout and returns them as the JSON "sparse" object.
cli::Json run_sparse_section(const SparseSettings& s);

}  // namespace spruce::bench
