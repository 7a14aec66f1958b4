// parallel_for covers every index once, splits statically, and propagates errors.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
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

TEST_CASE("a ThreadLimit makes its thread work as if on that many threads, and ends") {
  set_num_threads(3);
  const std::thread::id caller = std::this_thread::get_id();
  auto threads_used = [&] {
    std::vector<std::thread::id> ids(3);
    std::atomic<int> chunks{0};
    parallel_for(0, 3, 1, [&](int64_t lo, int64_t) {
      ids[static_cast<size_t>(lo)] = std::this_thread::get_id();
      ++chunks;
    });
    return chunks.load();
  };
  CHECK(threads_used() == 3);
  {
    const ThreadLimit one(1);
    CHECK(num_threads() == 1);
    bool all_on_caller = true;
    parallel_for(0, 1000, 1, [&](int64_t, int64_t) {
      all_on_caller = all_on_caller && std::this_thread::get_id() == caller;
    });
    CHECK(all_on_caller);
    CHECK(threads_used() == 1);
    {
      const ThreadLimit two(2);  // nested: never above the outer limit
      CHECK(num_threads() == 1);
    }
    CHECK(num_threads() == 1);
  }
  CHECK(num_threads() == 3);
  {
    const ThreadLimit two(2);
    CHECK(num_threads() == 2);
    CHECK(threads_used() == 2);
  }
  CHECK(num_threads() == 3);
  set_num_threads(2);
}
