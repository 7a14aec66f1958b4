// The packed-weight cache (see packed_weights.h): a short list searched
// linearly (a model has tens of packed weights) under one mutex.
#include "packed_weights.h"

#include <algorithm>
#include <atomic>
#include <mutex>

namespace spruce::ops {
namespace {

struct Entry {
  PackedWeightKey key;
  std::shared_ptr<std::vector<float>> data;
  uint64_t last_use = 0;
};

struct Cache {
  std::mutex mutex;
  std::vector<Entry> entries;
  uint64_t clock = 0;
};

Cache& cache() {
  static Cache c;
  return c;
}

std::atomic<int64_t> fills{0};

int64_t bytes_of(const Entry& e) { return static_cast<int64_t>(e.data->size() * sizeof(float)); }

}  // namespace

std::shared_ptr<const std::vector<float>> packed_weights(const PackedWeightKey& key, int64_t size,
                                                         const std::function<void(float*)>& fill) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  ++c.clock;
  for (Entry& e : c.entries)
    if (e.key == key && static_cast<int64_t>(e.data->size()) == size) {
      e.last_use = c.clock;
      return e.data;
    }
  // A copy of the same storage at the same place in the same layout is
  // stale: its buffer is refilled (or replaced, if a caller still holds it).
  auto same_slot = [&](const Entry& e) {
    return e.key.version.storage == key.version.storage && e.key.data == key.data &&
           std::equal(e.key.layout, e.key.layout + 4, key.layout);
  };
  auto it = std::find_if(c.entries.begin(), c.entries.end(), same_slot);
  if (it == c.entries.end()) {
    c.entries.push_back({key, nullptr, 0});
    it = c.entries.end() - 1;
  }
  Entry& e = *it;
  if (!e.data || e.data.use_count() > 1) e.data = std::make_shared<std::vector<float>>();
  e.data->resize(static_cast<size_t>(size));
  e.key = key;
  e.last_use = c.clock;
  fill(e.data->data());
  fills.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const std::vector<float>> result = e.data;
  // Least recently used copies out until the rest fit (the new one stays).
  int64_t total = 0;
  for (const Entry& x : c.entries) total += bytes_of(x);
  while (total > kPackedWeightBudget && c.entries.size() > 1) {
    auto oldest =
        std::min_element(c.entries.begin(), c.entries.end(),
                         [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
    total -= bytes_of(*oldest);
    c.entries.erase(oldest);
  }
  return result;
}

int64_t packed_weight_fills() { return fills.load(std::memory_order_relaxed); }

}  // namespace spruce::ops
