// Batched evaluation without autograd.
#include "tools/common/evaluate.h"

#include <chrono>

#include "core/autograd.h"
#include "core/ops/loss.h"
#include "core/parallel.h"
#include "data/data_loader.h"
#include "layers/inference_threads.h"

namespace spruce::cli {

double EvalResult::class_accuracy(size_t c) const {
  int64_t total = 0;
  for (int64_t v : confusion[c]) total += v;
  return total ? static_cast<double>(confusion[c][c]) / static_cast<double>(total) : 0.0;
}

EvalResult evaluate(Module& model, std::shared_ptr<const data::Dataset> dataset,
                    const data::TransformList& transforms, int64_t batch_size, int64_t limit) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  std::shared_ptr<const data::Dataset> source = dataset;
  if (limit > 0 && limit < dataset->size()) {
    std::vector<int64_t> first(static_cast<size_t>(limit));
    for (int64_t i = 0; i < limit; ++i) first[i] = i;
    source = std::make_shared<data::SubsetDataset>(dataset, std::move(first));
  }
  data::DataLoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = false;
  options.transforms = transforms;
  data::DataLoader loader(source, options);
  const size_t classes = static_cast<size_t>(dataset->num_classes());
  EvalResult result;
  result.confusion.assign(classes, std::vector<int64_t>(classes, 0));
  double loss_sum = 0;
  int64_t correct = 0;
  const auto start = std::chrono::steady_clock::now();
  InferenceThreads threads;  // batch 1 may run faster on one thread, large ones in chunks
  Shape full_batch;          // the first batch's shape: every batch's but maybe the last
  while (auto batch = loader.next()) {
    if (full_batch.empty()) full_batch = batch->images.shape();
    Tensor logits = threads.forward(model, batch->images);
    const auto n = static_cast<int64_t>(batch->labels.size());
    loss_sum += static_cast<double>(ops::cross_entropy(logits, batch->labels).item()) *
                static_cast<double>(n);
    const int64_t C = logits.size(1);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = logits.data() + i * C;
      int64_t best = 0;
      for (int64_t c = 1; c < C; ++c)
        if (row[c] > row[best]) best = c;
      const auto y = static_cast<size_t>(batch->labels[i]);
      if (static_cast<size_t>(best) < classes) ++result.confusion[y][static_cast<size_t>(best)];
      if (best == batch->labels[i]) ++correct;
    }
    result.samples += n;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!full_batch.empty()) {  // still trying after the last batch: it ran on the pool's count
    const InferencePlan chosen = threads.chosen(full_batch);
    result.threads = chosen.threads > 0 ? chosen.threads : num_threads();
    result.chunk = chosen.chunk;
  }
  if (result.samples > 0) {
    result.loss = loss_sum / static_cast<double>(result.samples);
    result.accuracy = static_cast<double>(correct) / static_cast<double>(result.samples);
  }
  model.train(was_training);
  return result;
}

}  // namespace spruce::cli
