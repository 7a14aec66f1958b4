// Data-parallel SGD (optim/data_parallel.h) on a small conv + batch norm +
// linear model built from core ops, with a fixed pruning mask on the linear
// weight. Alone (one rank) the exchange must leave a run untouched. Run by
// tests/mpirun.sh as N ranks, each rank trains on its shard of the same 20
// global batches (9 samples: uneven shards on 2 ranks) with synchronized
// batch norm and must end within 1e-5 (relative) of one process trained on
// the whole batches, with masked weights exactly zero, and every rank must
// hold the same bits. With per-rank batch norm the ranks still agree with
// each other. Only CHECK after a collective (see the distributed pruning test).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/ops/batch_norm.h"
#include "core/ops/batch_norm_sync.h"
#include "core/ops/conv2d.h"
#include "core/ops/elementwise.h"
#include "core/ops/loss.h"
#include "core/ops/matmul.h"
#include "core/ops/shape.h"
#include "core/random.h"
#include "optim/data_parallel.h"
#include "optim/sgd.h"

using namespace spruce;
using namespace spruce::optim;

namespace {

constexpr int64_t kBatch = 9, kSteps = 20, kClasses = 3;

struct Model {
  Tensor conv, gamma, beta, fc, fc_bias, running_mean, running_var, mask;
  explicit Model() {
    Generator gen(1);
    conv = Tensor::randn({4, 1, 3, 3}, gen, 0.f, 0.5f);
    gamma = Tensor::ones({4});
    beta = Tensor::zeros({4});
    fc = Tensor::randn({kClasses, 64}, gen, 0.f, 0.2f);
    fc_bias = Tensor::zeros({kClasses});
    running_mean = Tensor::zeros({4});
    running_var = Tensor::ones({4});
    std::vector<float> m(static_cast<size_t>(fc.numel()), 1.f);
    for (size_t i = 0; i < m.size(); i += 3) m[i] = 0.f;
    mask = Tensor::from_data({kClasses, 64}, m);
    for (Tensor* p : {&conv, &gamma, &beta, &fc, &fc_bias}) p->set_requires_grad(true);
  }
  NamedTensors params() const {
    return {{"conv", conv}, {"gamma", gamma}, {"beta", beta}, {"fc", fc}, {"fc_bias", fc_bias}};
  }
  Tensor forward(const Tensor& x) {
    Tensor h = ops::conv2d(x, conv);  // [B, 4, 4, 4]
    h = ops::relu(ops::batch_norm(h, gamma, beta, running_mean, running_var, {}));
    return ops::linear(ops::flatten(h), fc, fc_bias);  // [B, 3]
  }
};

/// Samples [first, last) of global batch `step` (the same on every rank).
std::pair<Tensor, std::vector<int32_t>> batch(int64_t step, int64_t first, int64_t last) {
  Generator gen(100 + static_cast<uint64_t>(step));
  const Tensor all = Tensor::randn({kBatch, 1, 6, 6}, gen);
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < kBatch; ++i) labels.push_back(static_cast<int32_t>(gen.below(kClasses)));
  const int64_t per = 36;
  return {Tensor::from_data({last - first, 1, 6, 6},
                            std::span<const float>(all.data() + first * per,
                                                   static_cast<size_t>((last - first) * per))),
          std::vector<int32_t>(labels.begin() + first, labels.begin() + last)};
}

/// 20 SGD steps; on `comm`'s ranks with the data split over them.
void train(Model& model, Communicator& comm, bool sync_bn) {
  Sgd opt(model.params(), {.lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 5e-4});
  opt.add_post_step_hook([&](Sgd&) {  // masked weights stay exactly zero
    for (int64_t i = 0; i < model.fc.numel(); ++i) model.fc.data()[i] *= model.mask.data()[i];
  });
  GradientAverager averager(comm, model.params(), 64 * 4);  // small buckets: several per step
  for (int64_t step = 0; step < kSteps; ++step) {
    const auto [first, last] = shard(kBatch, comm.rank(), comm.size());
    const auto [x, labels] = batch(step, first, last);
    opt.zero_grad();
    {
      std::unique_ptr<ops::SyncBatchNorm> sync;
      if (sync_bn && comm.size() > 1)
        sync = std::make_unique<ops::SyncBatchNorm>(comm, last - first, kBatch);
      ops::cross_entropy(model.forward(x), labels).backward();
    }
    averager.average(last - first, kBatch);
    opt.step();
  }
}

}  // namespace

TEST_CASE("data-parallel SGD on N ranks equals one process on the global batches") {
  Communicator& comm = world();
  if (const char* expect = std::getenv("SPRUCE_EXPECT_RANKS"))
    CHECK(comm.size() == std::atoi(expect));
  SingleProcess solo;
  Model one, many;
  train(one, solo, false);
  train(many, comm, true);
  const NamedTensors a = one.params(), b = many.params();
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    // Relative to the tensor's largest weight: max |a - b| / max |a|.
    double diff = 0.0, scale = 0.0;
    for (int64_t k = 0; k < a[i].second.numel(); ++k) {
      const double x = a[i].second.data()[k], y = b[i].second.data()[k];
      diff = std::max(diff, std::fabs(x - y));
      scale = std::max(scale, std::fabs(x));
    }
    MESSAGE(a[i].first << ": max |difference| / max |weight| = " << diff / scale);
    CHECK(diff <= 1e-5 * scale);
  }
  for (int64_t k = 0; k < many.fc.numel(); ++k)
    if (many.mask.data()[k] == 0.f) CHECK(many.fc.data()[k] == 0.f);
  // Running statistics: each rank's own, averaged, near the single process's.
  average_over_ranks(comm, {{"rm", many.running_mean}, {"rv", many.running_var}});
  for (int64_t c = 0; c < 4; ++c)
    CHECK(many.running_mean.data()[c] == doctest::Approx(one.running_mean.data()[c]).epsilon(1e-4));
}

TEST_CASE("data-parallel SGD keeps every rank's replica identical, per-rank batch norm too") {
  Communicator& comm = world();
  Model model;
  train(model, comm, false);
  std::vector<float> mine;
  for (const auto& [name, p] : model.params())
    mine.insert(mine.end(), p.data(), p.data() + p.numel());
  std::vector<float> root = mine;
  comm.broadcast(std::span<float>(root), 0);
  CHECK(mine == root);
  GradientAverager averager(comm, model.params());
  CHECK(averager.bytes_per_step() == static_cast<int64_t>(mine.size() * sizeof(float)));
}
