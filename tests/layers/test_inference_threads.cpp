// ThreadTrial's decision from given call times (every branch: a one-thread
// pool, a large first call, one thread faster, every thread faster, ties),
// and InferenceThreads running a module: same values on every call while it
// tries both counts. That every kernel gives the same bits on one thread and
// on two is checked on whole models in tests/models/test_sparse_inference.cpp.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/conv2d.h"
#include "layers/inference_threads.h"
#include "layers/relu.h"
#include "layers/sequential.h"

using namespace spruce;

namespace {

/// Runs a trial to its decision with calls taking one(threads) seconds;
/// returns the thread counts it asked for, in order.
template <class Time>
std::vector<int> run_trial(ThreadTrial& t, Time time) {
  std::vector<int> asked;
  while (!t.decided()) {
    REQUIRE(asked.size() < 100);
    asked.push_back(t.next());
    t.record(time(asked.back()));
  }
  return asked;
}

}  // namespace

TEST_CASE("ThreadTrial keeps a one-thread pool on one thread without trying") {
  ThreadTrial t(1);
  CHECK(t.decided());
  CHECK(t.next() == 1);
  CHECK(t.chosen() == 1);
}

TEST_CASE("ThreadTrial keeps every thread when the first call is large") {
  ThreadTrial t(2);
  CHECK_FALSE(t.decided());
  CHECK(t.next() == 2);
  t.record(ThreadTrial::kLargeCall);
  CHECK(t.chosen() == 2);
  CHECK(t.next() == 2);
}

TEST_CASE("ThreadTrial times alternated pairs and keeps the faster count") {
  SUBCASE("one thread faster") {
    ThreadTrial t(2);
    const std::vector<int> asked = run_trial(t, [](int n) { return n == 1 ? 3e-4 : 4e-4; });
    // every thread (may decide), one thread (warm-up), then kPairs pairs
    std::vector<int> expected{2, 1};
    for (int i = 0; i < ThreadTrial::kPairs; ++i) expected.insert(expected.end(), {2, 1});
    CHECK(asked == expected);
    CHECK(t.chosen() == 1);
  }
  SUBCASE("every thread faster") {
    ThreadTrial t(4);
    run_trial(t, [](int n) { return n == 1 ? 9e-4 : 4e-4; });
    CHECK(t.chosen() == 4);
  }
  SUBCASE("a tie keeps every thread; the median ignores one outlier pair") {
    ThreadTrial t(2);
    run_trial(t, [](int) { return 4e-4; });
    CHECK(t.chosen() == 2);
    ThreadTrial u(2);
    int call = 0;
    run_trial(u, [&](int n) {
      ++call;
      if (call == 3) return 1.0;  // the first timed call on every thread: one slow outlier
      return n == 1 ? 5e-4 : 4e-4;
    });
    CHECK(u.chosen() == 2);
  }
  SUBCASE("slow first calls under kLargeCall still try both counts") {
    ThreadTrial t(2);
    int call = 0;
    run_trial(t, [&](int n) {
      ++call;
      if (call <= 2) return n == 1 ? 4e-3 : 4.9e-3;  // slow first calls, under kLargeCall
      return n == 1 ? 3e-4 : 4e-4;
    });
    CHECK(t.chosen() == 1);
  }
}

TEST_CASE("InferenceThreads gives the module's own outputs on every call, per shape") {
  set_num_threads(2);
  Generator gen(3);
  Sequential net;
  net.emplace_back<Conv2d>(2, 8, 3, ops::Conv2dOptions{.padding = 1}, Bias::kYes, gen);
  net.emplace_back<ReLU>();
  net.eval();
  NoGradGuard no_grad;
  const Tensor x1 = Tensor::randn({1, 2, 6, 6}, gen), x3 = Tensor::randn({3, 2, 6, 6}, gen);
  const Tensor y1 = net.forward(x1), y3 = net.forward(x3);
  InferenceThreads threads;
  for (int call = 0; call < 2 * ThreadTrial::kPairs + 4; ++call) {
    const Tensor a = threads.forward(net, x1), b = threads.forward(net, x3);
    REQUIRE(a.shape() == y1.shape());
    REQUIRE(b.shape() == y3.shape());
    CHECK(std::memcmp(a.data(), y1.data(), sizeof(float) * static_cast<size_t>(a.numel())) == 0);
    CHECK(std::memcmp(b.data(), y3.data(), sizeof(float) * static_cast<size_t>(b.numel())) == 0);
  }
  CHECK(threads.chosen(x1.shape()) >= 1);
  CHECK(threads.chosen(x3.shape()) >= 1);
  CHECK(threads.chosen({5, 2, 6, 6}) == 0);
  CHECK(num_threads() == 2);  // no limit left behind
}
