// DataLoader, its prefetch thread, and seeded sample draws (see data_loader.h).
#include "data_loader.h"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <thread>
#include <utility>

#include "../core/communicator.h"
#include "../core/error.h"
#include "../core/random.h"

namespace spruce::data {
namespace {

// Stream tags, so the shuffle, augmentation and draw streams of one seed never overlap.
constexpr uint64_t kShuffleTag = 1;
constexpr uint64_t kAugmentTag = 2;
constexpr uint64_t kDrawTag = 3;

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Batch `batch` of an epoch whose sample order is `order`. A pure function of
// its arguments: it runs on the caller's thread or on the prefetch thread.
Batch build_batch(const Dataset& dataset, int64_t batch_size, uint64_t seed,
                  const TransformList& transforms, const std::vector<int64_t>& order, int64_t epoch,
                  int64_t batch, int part, int parts) {
  const auto n = static_cast<int64_t>(order.size());
  const int64_t whole_begin = batch * batch_size;
  const int64_t whole_size = std::min(n, whole_begin + batch_size) - whole_begin;
  const auto [first, last] = shard(whole_size, part, parts);
  const int64_t begin = whole_begin + first, count = last - first;
  const ImageShape shape = dataset.image_shape();
  const int64_t per_image = shape.numel();

  Batch out;
  out.epoch = epoch;
  out.index = batch;
  out.whole_size = whole_size;
  out.images = Tensor::empty({count, shape.channels, shape.height, shape.width});  // [B, C, H, W]
  out.labels.resize(static_cast<size_t>(count));
  out.indices.resize(static_cast<size_t>(count));
  float* data = out.images.data();
  for (int64_t j = 0; j < count; ++j) {
    const int64_t index = order[static_cast<size_t>(begin + j)];
    const std::span<float> image(data + j * per_image, static_cast<size_t>(per_image));
    dataset.read_image(index, image);
    if (!transforms.empty()) {
      // Seeded by the sample's position in the epoch, not by a shared stream,
      // so the result is independent of which thread builds which batch.
      Generator gen(derive_seed(
          seed, {kAugmentTag, static_cast<uint64_t>(epoch), static_cast<uint64_t>(begin + j)}));
      for (const auto& t : transforms) t->apply(image, shape, gen);
    }
    out.labels[static_cast<size_t>(j)] = dataset.label(index);
    out.indices[static_cast<size_t>(j)] = index;
  }
  return out;
}

}  // namespace

uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> parts) {
  uint64_t h = splitmix64(seed);
  for (uint64_t p : parts) h = splitmix64(h ^ splitmix64(p));
  return h;
}

std::vector<int64_t> draw_sample_indices(int64_t n, int64_t count, uint64_t seed) {
  if (n <= 0 || count < 0) {
    throw UsageError("draw_sample_indices: " + std::to_string(count) + " samples from " +
                     std::to_string(n) + ", expected n > 0 and count >= 0");
  }
  Generator gen(derive_seed(seed, {kDrawTag}));
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(count));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t take = std::min(n, count - static_cast<int64_t>(out.size()));
    std::iota(perm.begin(), perm.end(), int64_t{0});
    // Forward Fisher-Yates stopped after `take` steps: a uniform prefix.
    for (int64_t i = 0; i < take; ++i) {
      const auto j = i + static_cast<int64_t>(gen.below(static_cast<uint64_t>(n - i)));
      std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
    }
    out.insert(out.end(), perm.begin(), perm.begin() + take);
  }
  return out;
}

// ---- prefetch thread ----

// One worker thread and a one-batch slot. The caller submits the batch it
// will want next; take() returns it if that is the one submitted (waiting if
// needed), else nothing and the caller builds the batch itself. A result that
// is no longer wanted (after a seek) is dropped.
struct DataLoader::Prefetcher {
  using Job = std::function<Batch()>;
  struct Key {
    int64_t epoch = -1;
    int64_t batch = -1;
    bool operator==(const Key&) const = default;
  };

  std::mutex mutex;
  std::condition_variable cv;
  std::optional<Job> job;  // queued, not started
  Key job_key;
  bool running = false;
  bool running_wanted = false;
  Key running_key;
  bool has_result = false;
  Key result_key;
  std::optional<Batch> result;
  std::exception_ptr error;
  bool stop = false;
  std::thread thread;  // last: starts after every other member exists

  Prefetcher() {
    thread = std::thread([this] { loop(); });
  }

  ~Prefetcher() {
    {
      std::lock_guard lock(mutex);
      stop = true;
      job.reset();
    }
    cv.notify_all();
    thread.join();
  }

  void loop() {
    std::unique_lock lock(mutex);
    while (true) {
      cv.wait(lock, [&] { return stop || job.has_value(); });
      if (stop) return;
      Job work = std::move(*job);
      job.reset();
      running = true;
      running_wanted = true;
      running_key = job_key;
      lock.unlock();
      std::optional<Batch> r;
      std::exception_ptr e;
      try {
        r = work();
      } catch (...) {
        e = std::current_exception();
      }
      lock.lock();
      running = false;
      if (running_wanted) {
        result = std::move(r);
        error = e;
        result_key = running_key;
        has_result = true;
      }
      cv.notify_all();
    }
  }

  // Drops queued work and results; a batch being built is discarded when done.
  void cancel_locked() {
    job.reset();
    running_wanted = false;
    has_result = false;
    result.reset();
    error = nullptr;
  }

  void cancel() {
    std::lock_guard lock(mutex);
    cancel_locked();
  }

  void submit(Key key, Job work) {
    {
      std::lock_guard lock(mutex);
      cancel_locked();
      job = std::move(work);
      job_key = key;
    }
    cv.notify_all();
  }

  std::optional<Batch> take(Key key) {
    std::unique_lock lock(mutex);
    const bool pending = (job && job_key == key) ||
                         (running && running_wanted && running_key == key) ||
                         (has_result && result_key == key);
    if (!pending) return std::nullopt;
    cv.wait(lock, [&] { return has_result && result_key == key; });
    has_result = false;
    if (error) {
      std::exception_ptr e = error;
      error = nullptr;
      result.reset();
      std::rethrow_exception(e);
    }
    std::optional<Batch> out = std::move(result);
    result.reset();
    return out;
  }
};

// The sample orders of the last two epochs asked for (current and next, when
// prefetching across an epoch boundary).
struct DataLoader::OrderCache {
  std::array<int64_t, 2> epochs{-1, -1};
  std::array<std::shared_ptr<const std::vector<int64_t>>, 2> orders;
  size_t next_slot = 0;
};

// ---- DataLoader ----

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)),
      options_(std::move(options)),
      orders_(std::make_unique<OrderCache>()) {
  if (!dataset_) throw UsageError("data loader: dataset is null");
  const int64_t n = dataset_->size();
  if (n <= 0) throw UsageError("data loader: dataset " + dataset_->name() + " is empty");
  if (options_.batch_size < 1) {
    throw UsageError("data loader: batch size " + std::to_string(options_.batch_size) +
                     ", expected >= 1");
  }
  if (options_.drop_last && options_.batch_size > n) {
    throw UsageError("data loader: batch size " + std::to_string(options_.batch_size) +
                     " with drop_last leaves no batch of dataset " + dataset_->name() + " (" +
                     std::to_string(n) + " samples), expected batch size <= " + std::to_string(n));
  }
  if (options_.shards < 1 || options_.shard < 0 || options_.shard >= options_.shards) {
    throw UsageError("data loader: shard " + std::to_string(options_.shard) + " of " +
                     std::to_string(options_.shards) + ", expected 0 <= shard < shards");
  }
  for (const auto& t : options_.transforms) {
    if (!t) throw UsageError("data loader: a transform is null");
    t->check(dataset_->image_shape());
  }
  if (options_.prefetch) prefetcher_ = std::make_unique<Prefetcher>();
}

DataLoader::~DataLoader() = default;
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;

int64_t DataLoader::batches_per_epoch() const {
  const int64_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const { return *order_for(epoch); }

std::shared_ptr<const std::vector<int64_t>> DataLoader::order_for(int64_t epoch) const {
  if (epoch < 0)
    throw UsageError("data loader: epoch " + std::to_string(epoch) + ", expected >= 0");
  // Without shuffling every epoch has the same order: one cache entry serves all.
  const int64_t key = options_.shuffle ? epoch : 0;
  for (size_t s = 0; s < 2; ++s) {
    if (orders_->epochs[s] == key && orders_->orders[s]) return orders_->orders[s];
  }
  auto order = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(dataset_->size()));
  std::iota(order->begin(), order->end(), int64_t{0});
  if (options_.shuffle) {
    Generator gen(derive_seed(options_.seed, {kShuffleTag, static_cast<uint64_t>(epoch)}));
    for (size_t i = order->size() - 1; i > 0; --i) {
      std::swap((*order)[i], (*order)[gen.below(i + 1)]);
    }
  }
  const size_t slot = orders_->next_slot;
  orders_->epochs[slot] = key;
  orders_->orders[slot] = order;
  orders_->next_slot = 1 - slot;
  return order;
}

Batch DataLoader::batch_at(int64_t epoch, int64_t batch) const {
  if (batch < 0 || batch >= batches_per_epoch()) {
    throw UsageError("data loader: batch " + std::to_string(batch) + " of epoch " +
                     std::to_string(epoch) + ", expected 0.." +
                     std::to_string(batches_per_epoch() - 1));
  }
  const auto order = order_for(epoch);
  return build_batch(*dataset_, options_.batch_size, options_.seed, options_.transforms, *order,
                     epoch, batch, options_.shard, options_.shards);
}

std::optional<Batch> DataLoader::next() {
  const int64_t per_epoch = batches_per_epoch();
  if (batch_ >= per_epoch) {
    ++epoch_;
    batch_ = 0;
    return std::nullopt;
  }
  std::optional<Batch> out;
  if (prefetcher_) out = prefetcher_->take({epoch_, batch_});
  if (!out) out = batch_at(epoch_, batch_);
  ++batch_;
  if (prefetcher_) {
    int64_t e = epoch_, b = batch_;
    if (b >= per_epoch) {
      ++e;
      b = 0;
    }
    // The job owns copies of everything it reads, so it never touches *this.
    prefetcher_->submit(
        {e, b},
        [dataset = dataset_, order = order_for(e), size = options_.batch_size, seed = options_.seed,
         transforms = options_.transforms, e, b, part = options_.shard, parts = options_.shards] {
          return build_batch(*dataset, size, seed, transforms, *order, e, b, part, parts);
        });
  }
  return out;
}

void DataLoader::seek(int64_t epoch, int64_t batch) {
  if (epoch < 0 || batch < 0 || batch > batches_per_epoch()) {
    throw UsageError("data loader: cannot seek to epoch " + std::to_string(epoch) + " batch " +
                     std::to_string(batch) + ", expected epoch >= 0 and batch in 0.." +
                     std::to_string(batches_per_epoch()));
  }
  epoch_ = epoch;
  batch_ = batch;
  if (prefetcher_) prefetcher_->cancel();
}

void DataLoader::set_state(const LoaderState& state) {
  if (state.seed != options_.seed) {
    options_.seed = state.seed;
    *orders_ = OrderCache{};  // orders of the old seed
  }
  seek(state.epoch, state.batch);
}

DataLoader make_sample_loader(std::shared_ptr<const Dataset> dataset, int64_t num_batches,
                              int64_t batch_size, uint64_t seed, TransformList transforms) {
  if (!dataset) throw UsageError("sample loader: dataset is null");
  if (num_batches < 1 || batch_size < 1) {
    throw UsageError("sample loader: " + std::to_string(num_batches) + " batches of " +
                     std::to_string(batch_size) + " samples, expected both >= 1");
  }
  std::vector<int64_t> indices =
      draw_sample_indices(dataset->size(), num_batches * batch_size, seed);
  DataLoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = false;
  options.seed = seed;
  options.transforms = std::move(transforms);
  return DataLoader(std::make_shared<SubsetDataset>(std::move(dataset), std::move(indices)),
                    std::move(options));
}

}  // namespace spruce::data
