// parallel_for covers every index once, splits statically, and propagates errors.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/parallel.h"

using namespace spruce;

TEST_CASE("every index exactly once, for several thread counts") {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    CHECK(num_threads() == threads);
    std::vector<int> hits(1001, 0);
    parallel_for(0, 1001, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) ++hits[i];
    });
    for (int h : hits) CHECK(h == 1);
  }
  set_num_threads(2);
}

TEST_CASE("small ranges run on the caller; nested calls run serially") {
  set_num_threads(2);
  std::atomic<int> chunks{0};
  parallel_for(0, 10, 100, [&](int64_t lo, int64_t hi) {
    CHECK(lo == 0);
    CHECK(hi == 10);
    ++chunks;
  });
  CHECK(chunks == 1);
  std::atomic<int> inner{0};
  parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    parallel_for(0, 100, 1, [&](int64_t lo, int64_t hi) { inner += static_cast<int>(hi - lo); });
  });
  CHECK(inner == 200);
}

TEST_CASE("an exception in a worker reaches the caller") {
  set_num_threads(2);
  CHECK_THROWS_AS(parallel_for(0, 100, 1,
                               [](int64_t lo, int64_t) {
                                 if (lo > 0) throw std::runtime_error("boom");
                               }),
                  std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int64_t> total{0};
  parallel_for(0, 100, 1, [&](int64_t lo, int64_t hi) { total += hi - lo; });
  CHECK(total == 100);
}
