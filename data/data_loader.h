// DataLoader: seeded shuffling, batching, transforms and optional prefetch.
//
// Every batch is a pure function of (dataset, options, epoch, batch index):
//   order  = identity, or a Fisher-Yates permutation from
//            Generator(derive_seed(seed, epoch)) when shuffling;
//   batch b = samples order[b*B .. b*B+B), each turned into floats pixel/255
//            and transformed with its own Generator seeded from
//            (seed, epoch, position in the epoch).
// No generator is shared between batches, so the background prefetch thread
// gives the same bits as building batches in the caller's thread, and a run
// resumed at (epoch, batch) sees exactly the batches it would have seen.
//
// Iteration: next() returns the batches of the current epoch, then one empty
// optional, after which the loader stands at batch 0 of the next epoch:
//   while (loader.epoch() < epochs)
//     while (auto batch = loader.next()) train_step(*batch);
// A DataLoader is driven from one thread; only its prefetch worker runs beside it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <vector>

#include "../core/tensor.h"
#include "dataset.h"
#include "transforms.h"

namespace spruce::data {

struct DataLoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  /// Drop the last, smaller batch of each epoch.
  bool drop_last = false;
  uint64_t seed = 0;
  /// Build the next batch on a background thread while the caller trains.
  bool prefetch = false;
  TransformList transforms{};
  /// Data-parallel training: this loader yields only part `shard` of
  /// `shards` of every batch, the samples shard(B_b, shard, shards) of batch
  /// b's B_b (core/communicator.h), with the very pixels and augmentation
  /// they have in the whole batch. Batch counts and order stay the whole's.
  int shard = 0;
  int shards = 1;
};

/// One mini-batch.
struct Batch {
  Tensor images;                 // [B, C, H, W], transformed floats
  std::vector<int32_t> labels;   // [B]
  std::vector<int64_t> indices;  // [B] dataset index of each sample
  int64_t epoch = 0;
  int64_t index = 0;  // batch index within the epoch
  /// Samples in the whole batch: labels.size() unless the loader is sharded.
  int64_t whole_size = 0;
};

/// Where the loader stands: the next call to next() yields batch `batch` of
/// epoch `epoch`. Saved in checkpoints to resume exactly.
struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const LoaderState&) const = default;
};

class DataLoader {
 public:
  /// UsageError for an empty dataset, batch_size < 1, a drop_last setting that
  /// leaves no batch, or transforms that do not fit the images.
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options);
  ~DataLoader();
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch of the current epoch; empty at the epoch's end, which
  /// also moves the loader to batch 0 of the next epoch.
  std::optional<Batch> next();

  /// Moves to batch `batch` of `epoch` (0 <= batch <= batches_per_epoch()).
  void seek(int64_t epoch, int64_t batch = 0);
  LoaderState state() const { return {options_.seed, epoch_, batch_}; }
  /// Restores a saved state, seed included.
  void set_state(const LoaderState& state);

  int64_t epoch() const { return epoch_; }
  int64_t batches_per_epoch() const;
  const Dataset& dataset() const { return *dataset_; }
  const DataLoaderOptions& options() const { return options_; }

  /// The sample order of an epoch: a permutation of [0, size) ([size]).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  /// The batch any run yields at (epoch, batch), without moving the loader.
  Batch batch_at(int64_t epoch, int64_t batch) const;

 private:
  struct Prefetcher;
  struct OrderCache;
  std::shared_ptr<const std::vector<int64_t>> order_for(int64_t epoch) const;

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  int64_t epoch_ = 0;
  int64_t batch_ = 0;
  std::unique_ptr<OrderCache> orders_;
  std::unique_ptr<Prefetcher> prefetcher_;
};

/// A seed derived from `seed` and `parts` by splitmix64 mixing; distinct part
/// lists give unrelated streams.
uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> parts);

/// `count` indices drawn at random from [0, n) with Generator(seed): a prefix
/// of a seeded permutation, so all distinct while count <= n; beyond n, further
/// independent permutations follow, so no sample repeats before all were used.
std::vector<int64_t> draw_sample_indices(int64_t n, int64_t count, uint64_t seed);

/// A loader over num_batches * batch_size fresh samples of `dataset` drawn with
/// draw_sample_indices(seed), yielded in draw order in batches of batch_size
/// (the Fisher collection's m mini-batches of b samples). One epoch long.
DataLoader make_sample_loader(std::shared_ptr<const Dataset> dataset, int64_t num_batches,
                              int64_t batch_size, uint64_t seed, TransformList transforms = {});

}  // namespace spruce::data
