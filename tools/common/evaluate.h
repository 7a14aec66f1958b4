// Evaluation of a classifier on a data set: loss, top-1, per-class accuracy
// and the confusion matrix. Runs in eval mode without recording a graph and
// restores the module's mode afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "layers/module.h"

namespace spruce::cli {

struct EvalResult {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // top-1 in [0, 1]
  int64_t samples = 0;
  double seconds = 0;  // wall time of the evaluation loop (batches, forward, scoring)
  int threads = 0;     // threads the full batches ran on (layers/inference_threads.h; 0: no batch)
  int64_t chunk = 0;   // samples per forward of the full batches (0: each batch whole)
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class]
  /// Accuracy of one class (0 when the class has no samples).
  double class_accuracy(size_t c) const;
};

/// Evaluates `model` on at most `limit` samples (0 = all) in order.
EvalResult evaluate(Module& model, std::shared_ptr<const data::Dataset> dataset,
                    const data::TransformList& transforms, int64_t batch_size = 256,
                    int64_t limit = 0);

}  // namespace spruce::cli
