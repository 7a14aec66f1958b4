// Synchronized batch norm (core/ops/batch_norm_sync.h). Alone (one rank) the
// synchronized code path is gradient-checked, plain and fused with a ReLU,
// on long and short planes. Run by tests/mpirun.sh as N ranks, each rank
// normalises its part of a global batch and must match one process on the
// whole batch: outputs, running statistics, d x (in its own loss units) and
// the summed d weight / d bias. Only CHECK after a collective (a REQUIRE
// that stopped one rank would leave the others waiting).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/autograd.h"
#include "core/communicator.h"
#include "core/gradcheck.h"
#include "core/ops/batch_norm.h"
#include "core/ops/batch_norm_sync.h"
#include "core/ops/elementwise.h"
#include "core/random.h"

using namespace spruce;

namespace {

/// Rows [first, last) of x along dimension 0, as a new tensor.
Tensor rows(const Tensor& x, int64_t first, int64_t last) {
  Shape shape = x.shape();
  const int64_t per = x.numel() / shape[0];
  shape[0] = last - first;
  return Tensor::from_data(
      shape,
      std::span<const float>(x.data() + first * per, static_cast<size_t>((last - first) * per)));
}

double worst_relative(const float* a, const float* b, int64_t n) {
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i)
    worst =
        std::max(worst, std::fabs(double(a[i]) - b[i]) / std::max(1e-2, std::fabs(double(b[i]))));
  return worst;
}

}  // namespace

TEST_CASE("synchronized batch_norm path: gradients to x, weight and bias (one rank)") {
  SingleProcess solo;
  for (const int64_t side : {2, 9})  // short planes (S = 4) and long ones (S = 81 >= 64)
    for (const bool fused_relu : {false, true}) {
      CAPTURE(side);
      CAPTURE(fused_relu);
      Generator gen(3);
      Tensor x = Tensor::randn({3, 2, side, side}, gen);
      Tensor w = Tensor::randn({2}, gen, 1.f, 0.3f);
      Tensor b = Tensor::randn({2}, gen);
      x.set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
      GradCheckOptions gc;
      if (!fused_relu) gc.kink_tolerance = 0;  // smooth everywhere
      // With a ReLU, a bias step moves every value of the channel at once: a
      // smaller step keeps the many kinks of 243 values out of reach.
      if (fused_relu) gc.eps = 1e-3f;
      ops::SyncBatchNorm sync(solo, 3, 3);
      auto r = grad_check(
          [&](const std::vector<Tensor>& in) {
            Tensor y = ops::batch_norm(in[0], in[1], in[2], rm, rv, ops::BatchNormOptions{});
            return fused_relu ? ops::relu(y) : y;
          },
          {x, w, b}, gc);
      CHECK_MESSAGE(r.ok, r.message);
    }
}

TEST_CASE("synchronized batch_norm on N ranks equals one process on the global batch") {
  Communicator& comm = world();
  if (const char* expect = std::getenv("SPRUCE_EXPECT_RANKS"))
    CHECK(comm.size() == std::atoi(expect));
  constexpr int64_t kBatch = 7, kC = 3;
  for (const int64_t side : {2, 9})
    for (const bool fused_relu : {false, true}) {
      CAPTURE(side);
      CAPTURE(fused_relu);
      Generator gen(5);
      const Tensor x_all = Tensor::randn({kBatch, kC, side, side}, gen, 0.5f, 2.f);
      const Tensor proj_all = Tensor::randn({kBatch, kC, side, side}, gen);
      const Tensor w0 = Tensor::randn({kC}, gen, 1.f, 0.3f), b0 = Tensor::randn({kC}, gen);
      // loss = mean over samples of <proj, f(bn(x))>: one process, whole batch.
      auto run = [&](const Tensor& x_in, const Tensor& proj, int64_t count, Tensor& w, Tensor& b,
                     Tensor& rm, Tensor& rv) {
        Tensor x = x_in.clone();
        x.set_requires_grad(true);
        Tensor y = ops::batch_norm(x, w, b, rm, rv, ops::BatchNormOptions{});
        if (fused_relu) y = ops::relu(y);
        ops::scale(ops::sum(ops::mul(y, proj)), 1.f / static_cast<float>(count)).backward();
        return std::make_pair(y, x.grad());
      };
      Tensor w1 = w0.clone(), b1 = b0.clone(), rm1 = Tensor::zeros({kC}), rv1 = Tensor::ones({kC});
      w1.set_requires_grad(true);
      b1.set_requires_grad(true);
      const auto [y1, dx1] = run(x_all, proj_all, kBatch, w1, b1, rm1, rv1);

      const auto [first, last] = shard(kBatch, comm.rank(), comm.size());
      Tensor wn = w0.clone(), bn = b0.clone(), rmn = Tensor::zeros({kC}), rvn = Tensor::ones({kC});
      wn.set_requires_grad(true);
      bn.set_requires_grad(true);
      std::pair<Tensor, Tensor> mine;
      {
        ops::SyncBatchNorm sync(comm, last - first, kBatch);
        mine = run(rows(x_all, first, last), rows(proj_all, first, last), last - first, wn, bn, rmn,
                   rvn);
      }
      const Tensor y_ref = rows(y1, first, last), dx_ref = rows(dx1, first, last);
      CHECK(worst_relative(mine.first.data(), y_ref.data(), y_ref.numel()) <= 1e-5);
      // This rank's d x is in its own loss units: times its share, the global one's.
      std::vector<float> dx(mine.second.data(), mine.second.data() + mine.second.numel());
      for (float& v : dx) v *= static_cast<float>(last - first) / kBatch;
      CHECK(worst_relative(dx.data(), dx_ref.data(), dx_ref.numel()) <= 1e-4);
      CHECK(worst_relative(rmn.data(), rm1.data(), kC) <= 1e-6);
      CHECK(worst_relative(rvn.data(), rv1.data(), kC) <= 1e-6);
      // d weight, d bias: this rank's own, weighted by its share and summed.
      std::vector<float> dwb;
      for (const Tensor* t : {&wn, &bn})
        for (int64_t c = 0; c < kC; ++c)
          dwb.push_back(t->grad().data()[c] * static_cast<float>(last - first) / kBatch);
      comm.allreduce_sum(std::span<float>(dwb));
      CHECK(worst_relative(dwb.data(), w1.grad().data(), kC) <= 1e-4);
      CHECK(worst_relative(dwb.data() + kC, b1.grad().data(), kC) <= 1e-4);
    }
}
