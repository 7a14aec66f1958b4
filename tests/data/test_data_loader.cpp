// DataLoader: coverage of every sample per epoch, determinism by seed,
// prefetch giving identical bits, exact resume, and seeded sample draws.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/data_loader.h"
#include "data/dataset.h"
#include "data/transforms.h"

using namespace spruce;
using namespace spruce::data;

namespace {

constexpr int64_t kN = 23;

// Sample i: image [1, 2, 2] with pixels i, i + 50, i + 100, i + 150; label i % 3.
std::shared_ptr<InMemoryDataset> numbered_dataset() {
  std::vector<uint8_t> px;
  std::vector<int32_t> labels;
  for (int i = 0; i < kN; ++i) {
    for (int k = 0; k < 4; ++k) px.push_back(static_cast<uint8_t>(i + 50 * k));
    labels.push_back(i % 3);
  }
  return std::make_shared<InMemoryDataset>("numbers", ImageShape{1, 2, 2},
                                           std::vector<std::string>{"a", "b", "c"}, px, labels);
}

// Every batch of one epoch, by iterating next() until it returns nothing.
std::vector<Batch> run_epoch(DataLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

bool same_bits(const Batch& a, const Batch& b) {
  return a.images.shape() == b.images.shape() && a.labels == b.labels && a.indices == b.indices &&
         std::memcmp(a.images.data(), b.images.data(), sizeof(float) * a.images.numel()) == 0 &&
         a.epoch == b.epoch && a.index == b.index;
}

bool same_bits(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

std::vector<int64_t> indices_of(const std::vector<Batch>& batches) {
  std::vector<int64_t> out;
  for (const Batch& b : batches) out.insert(out.end(), b.indices.begin(), b.indices.end());
  return out;
}

TransformList augment() {
  return {std::make_shared<RandomCrop>(1), std::make_shared<RandomHorizontalFlip>(),
          std::make_shared<Normalize>(std::vector<float>{0.5f}, std::vector<float>{0.25f})};
}

}  // namespace

TEST_CASE("loader: every sample exactly once per epoch, images and labels match") {
  DataLoader loader(numbered_dataset(), {.batch_size = 5, .shuffle = true, .seed = 3});
  CHECK(loader.batches_per_epoch() == 5);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    CHECK(loader.epoch() == epoch);
    const std::vector<Batch> batches = run_epoch(loader);
    REQUIRE(batches.size() == 5);
    CHECK(batches.back().images.shape() == Shape{3, 1, 2, 2});  // 23 = 4 * 5 + 3
    std::vector<int64_t> seen;
    for (const Batch& b : batches) {
      CHECK(b.epoch == epoch);
      for (size_t j = 0; j < b.labels.size(); ++j) {
        // Recover the sample number from its first pixel and check the rest.
        const auto i =
            static_cast<int64_t>(std::lround(b.images.at(static_cast<int64_t>(j) * 4) * 255.f));
        CHECK(i == b.indices[j]);
        CHECK(b.labels[j] == i % 3);
        CHECK(b.images.at(static_cast<int64_t>(j) * 4 + 3) == static_cast<float>(i + 150) / 255.f);
        seen.push_back(i);
      }
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(kN);
    std::iota(all.begin(), all.end(), 0);
    CHECK(seen == all);
  }
}

TEST_CASE("loader: drop_last and no shuffle") {
  DataLoader dropped(numbered_dataset(), {.batch_size = 5, .shuffle = true, .drop_last = true});
  CHECK(dropped.batches_per_epoch() == 4);
  const std::vector<int64_t> idx = indices_of(run_epoch(dropped));
  CHECK(idx.size() == 20);
  CHECK(std::set<int64_t>(idx.begin(), idx.end()).size() == 20);

  DataLoader plain(numbered_dataset(), {.batch_size = 10, .shuffle = false});
  std::vector<int64_t> all(kN);
  std::iota(all.begin(), all.end(), 0);
  CHECK(indices_of(run_epoch(plain)) == all);
  CHECK(indices_of(run_epoch(plain)) == all);
}

TEST_CASE("loader: deterministic by seed, different across epochs and seeds") {
  auto ds = numbered_dataset();
  DataLoader a(ds, {.batch_size = 4, .seed = 11, .transforms = augment()});
  DataLoader b(ds, {.batch_size = 4, .seed = 11, .transforms = augment()});
  DataLoader c(ds, {.batch_size = 4, .seed = 12, .transforms = augment()});
  const auto a0 = run_epoch(a), a1 = run_epoch(a);
  const auto b0 = run_epoch(b), b1 = run_epoch(b);
  const auto c0 = run_epoch(c);
  CHECK(same_bits(a0, b0));
  CHECK(same_bits(a1, b1));
  CHECK(indices_of(a0) != indices_of(a1));
  CHECK(indices_of(a0) != indices_of(c0));
  CHECK(a.epoch_order(0) == indices_of(a0));

  // Augmentation differs between epochs for the same sample: compare the
  // transformed image of sample 0 over several epochs.
  std::set<std::vector<float>> versions;
  for (int64_t e = 0; e < 6; ++e) {
    const std::vector<int64_t> order = a.epoch_order(e);
    const auto pos = std::find(order.begin(), order.end(), 0) - order.begin();
    const Batch batch = a.batch_at(e, pos / 4);
    const auto* img = batch.images.data() + (pos % 4) * 4;
    versions.insert(std::vector<float>(img, img + 4));
  }
  CHECK(versions.size() > 1);
}

TEST_CASE("loader: prefetch gives the same batches") {
  auto ds = numbered_dataset();
  DataLoader sync(ds, {.batch_size = 4, .seed = 5, .transforms = augment()});
  DataLoader pre(ds, {.batch_size = 4, .seed = 5, .prefetch = true, .transforms = augment()});
  for (int e = 0; e < 3; ++e) {
    const auto s = run_epoch(sync);
    const auto p = run_epoch(pre);
    CHECK(s.size() == 6);
    CHECK(same_bits(s, p));
  }
  // Seeking away from the prefetched batch still gives the right one.
  pre.seek(1, 2);
  sync.seek(1, 2);
  CHECK(same_bits(*pre.next(), *sync.next()));
  pre.seek(0, 0);
  CHECK(same_bits(*pre.next(), sync.batch_at(0, 0)));
}

TEST_CASE("loader: resume from a saved state gives the same batches") {
  auto ds = numbered_dataset();
  const DataLoaderOptions options{.batch_size = 4, .seed = 9, .transforms = augment()};
  DataLoader first(ds, options);
  run_epoch(first);
  CHECK(first.state() == LoaderState{9, 1, 0});
  first.next();
  first.next();
  const LoaderState saved = first.state();
  CHECK(saved == LoaderState{9, 1, 2});
  std::vector<Batch> rest = run_epoch(first);
  const std::vector<Batch> next_epoch = run_epoch(first);

  for (const bool prefetch : {false, true}) {
    DataLoaderOptions other = options;
    other.seed = 1234;  // the state carries the seed
    other.prefetch = prefetch;
    DataLoader resumed(ds, other);
    resumed.set_state(saved);
    CHECK(resumed.state() == saved);
    CHECK(same_bits(run_epoch(resumed), rest));
    CHECK(same_bits(run_epoch(resumed), next_epoch));
  }

  // A state saved after the last batch of an epoch resumes into the next one.
  DataLoader at_end(ds, options);
  at_end.seek(0, at_end.batches_per_epoch());
  CHECK_FALSE(at_end.next().has_value());
  CHECK(at_end.state() == LoaderState{9, 1, 0});
  CHECK_THROWS_AS(at_end.seek(0, 7), UsageError);
  CHECK_THROWS_AS(at_end.seek(-1, 0), UsageError);
}

TEST_CASE("loader: the usual training loop runs the planned epochs") {
  DataLoader loader(numbered_dataset(), {.batch_size = 8, .prefetch = true});
  int batches = 0;
  while (loader.epoch() < 2) {
    while (auto b = loader.next()) ++batches;
  }
  CHECK(batches == 6);
}

TEST_CASE("loader: settings are checked") {
  auto ds = numbered_dataset();
  CHECK_THROWS_AS(DataLoader(ds, {.batch_size = 0}), UsageError);
  CHECK_THROWS_AS(DataLoader(ds, {.batch_size = 24, .drop_last = true}), UsageError);
  CHECK_THROWS_AS(
      DataLoader(ds, {.transforms = {std::make_shared<Normalize>(Normalize::cifar10())}}),
      UsageError);
  CHECK_THROWS_AS(DataLoader(nullptr, {}), UsageError);
  DataLoader ok(ds, {.batch_size = 24});
  CHECK(ok.batches_per_epoch() == 1);
  CHECK_THROWS_AS(ok.batch_at(0, 1), UsageError);
}

namespace {
// Fails on sample 7: errors on the prefetch thread must reach the caller.
class FailingDataset final : public Dataset {
 public:
  int64_t size() const override { return 10; }
  ImageShape image_shape() const override { return {1, 1, 1}; }
  const std::vector<std::string>& class_names() const override { return names_; }
  int32_t label(int64_t) const override { return 0; }
  void read_image(int64_t i, std::span<float> out) const override {
    if (i == 7) throw FormatError("failing: sample 7 is broken");
    out[0] = static_cast<float>(i);
  }
  std::string name() const override { return "failing"; }

 private:
  std::vector<std::string> names_{"only"};
};
}  // namespace

TEST_CASE("loader: an error while prefetching is raised by next()") {
  DataLoader loader(std::make_shared<FailingDataset>(),
                    {.batch_size = 2, .shuffle = false, .prefetch = true});
  CHECK(loader.next()->images.at(1) == 1.f);  // samples 0, 1; prefetches 2, 3
  CHECK(loader.next().has_value());           // 2, 3; prefetches 4, 5
  CHECK(loader.next().has_value());           // 4, 5; prefetches 6, 7 (fails)
  CHECK_THROWS_AS(loader.next(), FormatError);
  CHECK(loader.state().batch == 3);  // not advanced past the failed batch
}

TEST_CASE("draw_sample_indices and the sample loader") {
  const std::vector<int64_t> ten = draw_sample_indices(50, 10, 4);
  CHECK(ten.size() == 10);
  CHECK(std::set<int64_t>(ten.begin(), ten.end()).size() == 10);
  const std::vector<int64_t> five = draw_sample_indices(50, 5, 4);
  CHECK(std::equal(five.begin(), five.end(), ten.begin()));  // a prefix of the same permutation
  CHECK(draw_sample_indices(50, 10, 5) != ten);
  for (int64_t v : ten) CHECK((v >= 0 && v < 50));

  // More than n: whole permutations first, so no sample repeats early.
  const std::vector<int64_t> many = draw_sample_indices(4, 10, 1);
  REQUIRE(many.size() == 10);
  CHECK(std::set<int64_t>(many.begin(), many.begin() + 4).size() == 4);
  CHECK(std::set<int64_t>(many.begin() + 4, many.begin() + 8).size() == 4);

  // Fisher collection: m = 4 mini-batches of b = 3 fresh samples.
  auto ds = numbered_dataset();
  DataLoader fisher = make_sample_loader(ds, 4, 3, 77);
  CHECK(fisher.batches_per_epoch() == 4);
  const std::vector<Batch> batches = run_epoch(fisher);
  REQUIRE(batches.size() == 4);
  std::vector<int64_t> drawn;
  for (const Batch& b : batches) {
    REQUIRE(b.labels.size() == 3);
    for (size_t j = 0; j < 3; ++j) {
      const auto i =
          static_cast<int64_t>(std::lround(b.images.at(static_cast<int64_t>(j) * 4) * 255.f));
      CHECK(b.labels[j] == i % 3);
      drawn.push_back(i);
    }
  }
  CHECK(drawn == draw_sample_indices(kN, 12, 77));
  CHECK_THROWS_AS(make_sample_loader(ds, 0, 3, 1), UsageError);
}

TEST_CASE("loader: shards of a batch are the whole batch's samples, split in order") {
  auto ds = numbered_dataset();
  for (const bool prefetch : {false, true}) {
    DataLoader whole(ds, {.batch_size = 5, .seed = 3, .transforms = augment()});
    std::vector<std::unique_ptr<DataLoader>> parts;
    for (int s = 0; s < 3; ++s)
      parts.push_back(std::make_unique<DataLoader>(ds, DataLoaderOptions{.batch_size = 5,
                                                                         .seed = 3,
                                                                         .prefetch = prefetch,
                                                                         .transforms = augment(),
                                                                         .shard = s,
                                                                         .shards = 3}));
    for (int e = 0; e < 2; ++e) {
      const auto all = run_epoch(whole);
      for (const Batch& b : all) {
        CHECK(b.whole_size == static_cast<int64_t>(b.labels.size()));
        // The shards' images and labels, concatenated, are the whole batch's.
        std::vector<float> pixels;
        std::vector<int32_t> labels;
        for (auto& p : parts) {
          const auto piece = p->next();
          REQUIRE(piece.has_value());
          CHECK(piece->whole_size == b.whole_size);
          CHECK(piece->index == b.index);
          pixels.insert(pixels.end(), piece->images.data(),
                        piece->images.data() + piece->images.numel());
          labels.insert(labels.end(), piece->labels.begin(), piece->labels.end());
        }
        CHECK(labels == b.labels);
        CHECK(pixels == std::vector<float>(b.images.data(), b.images.data() + b.images.numel()));
      }
      for (auto& p : parts) CHECK(!p->next().has_value());
    }
  }
  // 23 samples in batches of 5: the last batch of 3 gives the third shard one sample.
  DataLoader last(ds, {.batch_size = 5, .shuffle = false, .shard = 2, .shards = 3});
  CHECK(last.batch_at(0, 4).labels.size() == 1);
  CHECK(last.batch_at(0, 0).indices == std::vector<int64_t>{4});
  CHECK_THROWS_AS(DataLoader(ds, {.batch_size = 5, .shard = 3, .shards = 3}), UsageError);
}
