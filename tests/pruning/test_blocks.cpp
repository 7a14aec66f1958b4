// Block structure: layer boundaries always end a block; block work runs
// every block once, in parallel when there are enough of them.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "pruning/block_parallel.h"
#include "pruning/blocks.h"

using namespace spruce;
using namespace spruce::pruning;

TEST_CASE("layers {5, 7} with c = 3 split at the layer boundary") {
  const std::vector<int64_t> sizes{5, 7};
  const std::vector<Block> expect{{0, 3, 0}, {3, 5, 0}, {5, 8, 1}, {8, 11, 1}, {11, 12, 1}};
  CHECK(make_blocks(sizes, 3) == expect);
}

TEST_CASE("c >= layer size gives one block per layer; c = 1 gives the diagonal") {
  const std::vector<int64_t> sizes{5, 7, 4};
  const std::vector<Block> per_layer{{0, 5, 0}, {5, 12, 1}, {12, 16, 2}};
  CHECK(make_blocks(sizes, 7) == per_layer);
  CHECK(make_blocks(sizes, 1000) == per_layer);
  const std::vector<Block> diag = make_blocks(sizes, 1);
  REQUIRE(diag.size() == 16);
  for (int64_t i = 0; i < 16; ++i) {
    CHECK(diag[i].begin == i);
    CHECK(diag[i].size() == 1);
  }
  CHECK(diag[4].layer == 0);
  CHECK(diag[5].layer == 1);
  CHECK(diag[12].layer == 2);
}

TEST_CASE("blocks tile [0, d) in order; empty layers get none") {
  const std::vector<int64_t> sizes{10, 0, 3};
  const std::vector<Block> b = make_blocks(sizes, 4);
  const std::vector<Block> expect{{0, 4, 0}, {4, 8, 0}, {8, 10, 0}, {10, 13, 2}};
  CHECK(b == expect);
}

TEST_CASE("invalid block size or layer size is rejected") {
  const std::vector<int64_t> sizes{5};
  CHECK_THROWS_AS(make_blocks(sizes, 0), UsageError);
  const std::vector<int64_t> bad{5, -1};
  CHECK_THROWS_AS(make_blocks(bad, 2), UsageError);
}

TEST_CASE("for_each_block visits every block once and rethrows a worker's error") {
  set_num_threads(2);
  CHECK(block_workers(3) == 1);
  CHECK(block_workers(4) == 2);
  for (int64_t n : {0, 1, 3, 4, 101}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for_each_block(n, [&](int64_t b, int worker) {
      CHECK(worker < block_workers(n));
      ++hits[b];
    });
    for (const auto& h : hits) CHECK(h == 1);
  }
  CHECK_THROWS_AS(for_each_block(50,
                                 [](int64_t b, int) {
                                   if (b == 17) throw std::runtime_error("block 17");
                                 }),
                  std::runtime_error);
}
