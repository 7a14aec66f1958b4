// PlanTrial's decision from given call times (every branch: nothing to try,
// one thread or chunks faster or slower, ties, an outlier), forward_in_chunks
// against the whole forward, and InferenceThreads running a module: same
// values on every call while it tries both plans. That every kernel gives the same bits on one
// thread and on two is checked on whole models in tests/models/test_sparse_inference.cpp.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/conv2d.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/inference_threads.h"
#include "layers/relu.h"
#include "layers/sequential.h"

using namespace spruce;

namespace {

/// Runs a trial to its decision with calls taking time(plan) seconds;
/// returns the plans it asked for, in order.
template <class Time>
std::vector<InferencePlan> run_trial(PlanTrial& t, Time time) {
  std::vector<InferencePlan> asked;
  while (!t.decided()) {
    REQUIRE(asked.size() < 100);
    asked.push_back(t.next());
    t.record(time(asked.back()));
  }
  return asked;
}

const InferencePlan kWhole2{2, 0}, kOne{1, 0}, kChunks2{2, 2 * PlanTrial::kChunkPerThread};

/// Call 0 whole on every thread, the candidate (untimed), then kPairs pairs.
std::vector<InferencePlan> expected_calls(InferencePlan whole, InferencePlan candidate) {
  std::vector<InferencePlan> calls{whole, candidate};
  for (int i = 0; i < PlanTrial::kPairs; ++i) calls.insert(calls.end(), {whole, candidate});
  return calls;
}

/// An output that drops the batch dimension: forward_in_chunks must refuse it.
struct Collapse : Module {
  Tensor forward(const Tensor& x) override { return Tensor::zeros({x.numel()}); }
};

}  // namespace

TEST_CASE("PlanTrial decides at the first call when there is nothing to try") {
  SUBCASE("a one-thread pool and a batch of less than two chunks") {
    PlanTrial t(1, 31);
    CHECK(t.next() == InferencePlan{1, 0});
    t.record(1e-4);
    CHECK(t.decided());
    CHECK(t.chosen() == InferencePlan{1, 0});
  }
  SUBCASE("nothing may change the split (a portable build): decided before any call") {
    PlanTrial t(2, 1000, false);
    CHECK(t.decided());
    CHECK(t.chosen() == kWhole2);
  }
  SUBCASE("a large first call on a batch of less than two chunks") {
    PlanTrial t(2, 2 * PlanTrial::kChunkPerThread * 2 - 1);
    CHECK_FALSE(t.decided());
    CHECK(t.chosen().threads == 0);
    CHECK(t.next() == kWhole2);
    t.record(PlanTrial::kLargeCall);
    CHECK(t.chosen() == kWhole2);
    CHECK(t.next() == kWhole2);
  }
}

TEST_CASE("PlanTrial tries one thread on small calls and keeps the faster") {
  SUBCASE("one thread faster") {
    PlanTrial t(2, 1);
    const auto asked = run_trial(t, [](InferencePlan p) { return p.threads == 1 ? 3e-4 : 4e-4; });
    CHECK(asked == expected_calls(kWhole2, kOne));
    CHECK(t.chosen() == kOne);
  }
  SUBCASE("every thread faster") {
    PlanTrial t(4, 1);
    run_trial(t, [](InferencePlan p) { return p.threads == 1 ? 9e-4 : 4e-4; });
    CHECK(t.chosen() == InferencePlan{4, 0});
  }
  SUBCASE("a tie keeps every thread; the median ignores one outlier pair") {
    PlanTrial t(2, 1);
    run_trial(t, [](InferencePlan) { return 4e-4; });
    CHECK(t.chosen() == kWhole2);
    PlanTrial u(2, 1);
    int call = 0;
    run_trial(u, [&](InferencePlan p) {
      ++call;
      if (call == 3) return 1.0;  // the first timed call on every thread: one slow outlier
      return p.threads == 1 ? 5e-4 : 4e-4;
    });
    CHECK(u.chosen() == kWhole2);
  }
  SUBCASE("slow first calls under kLargeCall still try one thread") {
    PlanTrial t(2, 1);
    int call = 0;
    run_trial(t, [&](InferencePlan p) {
      ++call;
      if (call <= 2) return p.threads == 1 ? 4e-3 : 4.9e-3;  // slow first calls, under kLargeCall
      return p.threads == 1 ? 3e-4 : 4e-4;
    });
    CHECK(t.chosen() == kOne);
  }
}

TEST_CASE("PlanTrial tries chunks on large calls of two chunks or more and keeps the faster") {
  const int64_t batch = 2 * kChunks2.chunk;
  SUBCASE("chunks faster") {
    PlanTrial t(2, batch);
    const auto asked = run_trial(t, [](InferencePlan p) { return p.chunk > 0 ? 8e-3 : 9e-3; });
    CHECK(asked == expected_calls(kWhole2, kChunks2));
    CHECK(t.chosen() == kChunks2);
  }
  SUBCASE("whole batches faster, and ties keep them") {
    PlanTrial t(2, batch);
    run_trial(t, [](InferencePlan p) { return p.chunk > 0 ? 9e-3 : 8e-3; });
    CHECK(t.chosen() == kWhole2);
    PlanTrial u(2, batch);
    run_trial(u, [](InferencePlan) { return 8e-3; });
    CHECK(u.chosen() == kWhole2);
  }
  SUBCASE("a one-thread pool tries chunks whatever the first call takes") {
    PlanTrial t(1, PlanTrial::kChunkPerThread * 2);
    const auto asked = run_trial(t, [](InferencePlan p) { return p.chunk > 0 ? 1e-4 : 2e-4; });
    CHECK(asked == expected_calls({1, 0}, {1, PlanTrial::kChunkPerThread}));
    CHECK(t.chosen() == InferencePlan{1, PlanTrial::kChunkPerThread});
  }
}

TEST_CASE("forward_in_chunks gives the whole forward's bits in near-equal parts") {
  // Per-sample layers whose bits cannot depend on the batch in any build (the
  // convs' are checked on whole models in tests/models/test_sparse_inference.cpp);
  // Flatten gives the parts an output shape of their own.
  Generator gen(4);
  Sequential net;
  net.emplace_back<ReLU>();
  net.emplace_back<Flatten>();
  net.eval();
  NoGradGuard no_grad;
  const Tensor x = Tensor::randn({7, 2, 6, 6}, gen);
  const Tensor whole = net.forward(x);
  for (int64_t chunk : {0, 1, 2, 3, 6, 7, 100}) {
    CAPTURE(chunk);
    const Tensor y = forward_in_chunks(net, x, chunk);
    REQUIRE(y.shape() == whole.shape());
    CHECK(std::memcmp(y.data(), whole.data(), sizeof(float) * static_cast<size_t>(y.numel())) == 0);
  }
  Collapse collapse;
  CHECK_THROWS_AS(forward_in_chunks(collapse, x, 3), UsageError);
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
  // A one-thread limit: the large batch tries chunks whatever its calls take.
  const Tensor x40 = Tensor::randn({40, 2, 6, 6}, gen);
  const Tensor y40 = [&] {       // its reference on one thread too: a portable build's convs
    const ThreadLimit limit(1);  // may round differently on one thread than on two
    return net.forward(x40);
  }();
  InferenceThreads threads, one_thread;
  for (int call = 0; call < 2 * PlanTrial::kPairs + 4; ++call) {
    const Tensor a = threads.forward(net, x1), b = threads.forward(net, x3);
    REQUIRE(a.shape() == y1.shape());
    REQUIRE(b.shape() == y3.shape());
    CHECK(std::memcmp(a.data(), y1.data(), sizeof(float) * static_cast<size_t>(a.numel())) == 0);
    CHECK(std::memcmp(b.data(), y3.data(), sizeof(float) * static_cast<size_t>(b.numel())) == 0);
    const ThreadLimit limit(1);
    const Tensor c = one_thread.forward(net, x40);
    REQUIRE(c.shape() == y40.shape());
    CHECK(std::memcmp(c.data(), y40.data(), sizeof(float) * static_cast<size_t>(c.numel())) == 0);
  }
  CHECK(threads.chosen(x1.shape()).threads >= 1);
  CHECK(threads.chosen(x3.shape()).threads >= 1);
  CHECK(threads.chosen({5, 2, 6, 6}).threads == 0);
  CHECK(one_thread.chosen(x40.shape()).threads == 1);
  if (!ops::inference_split_invariant())  // a portable build: every thread, whole batch
    CHECK(threads.chosen(x1.shape()) == InferencePlan{2, 0});
  CHECK(num_threads() == 2);  // no limit left behind
}
