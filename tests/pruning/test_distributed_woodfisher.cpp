// Distributed pruning (pruning/distributed_fisher.h) against one process.
// Run alone, world() is one rank and the cases check the partition and the
// gradient redistribution; run by tests/mpirun.sh as N ranks, every Fisher
// pruner is checked to give the single process's masks exactly and its
// weights within 1e-6, with the exact and the summed OBS update, global and
// per-layer selection, dense (Direct) and factored (Gram) blocks, and masks
// from an earlier step. Only CHECK is used after a collective: a REQUIRE that
// stopped one rank early would leave the others waiting.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/error.h"
#include "core/random.h"
#include "pruning/diag_fisher_pruner.h"
#include "pruning/distributed_fisher.h"
#include "pruning/prune_step.h"
#include "pruning/woodfisher_pruner.h"

using namespace spruce;
using namespace spruce::pruning;

namespace {

constexpr int64_t kSamples = 24;

/// Three layers of random weights (the same on every rank), a few pruned.
struct Problem {
  std::vector<Tensor> weights, masks;
  PrunableSet set;
};

Problem make_problem() {
  Generator gen(7);
  Problem p;
  const std::vector<int64_t> sizes = {37, 130, 53};
  for (size_t l = 0; l < sizes.size(); ++l) {
    p.weights.push_back(Tensor::randn({sizes[l]}, gen));
    std::vector<float> mask(static_cast<size_t>(sizes[l]), 1.f);
    for (size_t i = l; i < mask.size(); i += 9) mask[i] = 0.f;  // an earlier step's
    p.masks.push_back(Tensor::from_data({sizes[l]}, mask));
    p.set.add("layer" + std::to_string(l), p.weights.back(), p.masks.back());
  }
  p.set.apply_masks();
  return p;
}

/// m gradients of d weights (the same on every rank). [m, d]
std::vector<float> make_gradients(int64_t d) {
  Generator gen(11);
  std::vector<float> g(static_cast<size_t>(kSamples * d));
  for (float& v : g) v = gen.normal();
  return g;
}

/// Rows shard(m, rank) of the whole bank.
GradientBank my_rows(const std::vector<float>& all, int64_t d, Communicator& comm) {
  const auto [first, last] = shard(kSamples, comm.rank(), comm.size());
  return GradientBank(d, std::vector<float>(all.begin() + first * d, all.begin() + last * d));
}

void check_same(const Problem& one, const Problem& many) {
  const std::vector<float> w1 = one.set.flat_weights(), wn = many.set.flat_weights();
  CHECK(one.set.flat_mask() == many.set.flat_mask());
  double worst = 0.0;
  for (size_t q = 0; q < w1.size(); ++q)
    worst =
        std::max(worst, std::fabs(double(w1[q]) - wn[q]) / std::max(1.0, std::fabs(double(w1[q]))));
  CHECK(worst <= 1e-6);
  for (size_t q = 0; q < wn.size(); ++q)
    if (many.set.flat_mask()[q] == 0.f) CHECK(wn[q] == 0.f);
}

}  // namespace

TEST_CASE("the test runs on the number of ranks it was started with") {
  if (const char* expect = std::getenv("SPRUCE_EXPECT_RANKS"))
    CHECK(world().size() == std::atoi(expect));
}

TEST_CASE("shard splits n items evenly in rank order") {
  CHECK(shard(10, 0, 3) == std::pair<int64_t, int64_t>{0, 4});
  CHECK(shard(10, 1, 3) == std::pair<int64_t, int64_t>{4, 7});
  CHECK(shard(10, 2, 3) == std::pair<int64_t, int64_t>{7, 10});
  CHECK(shard(1, 1, 2) == std::pair<int64_t, int64_t>{1, 1});
  CHECK_THROWS_AS(shard(5, 2, 2), UsageError);
}

TEST_CASE("partition_blocks cuts contiguous runs of about equal inverse memory") {
  const std::vector<int64_t> sizes = {300, 100, 100, 100};
  const auto blocks = make_blocks(sizes, 100);  // six blocks of 100, dense at m = 60
  const BlockPartition p = partition_blocks(blocks, 60, InverseMethod::kAuto, 2);
  CHECK(p.first_block == std::vector<int64_t>{0, 3, 6});
  CHECK(p.column_start == std::vector<int64_t>{0, 300, 600});
  CHECK(p.column_counts() == std::vector<int64_t>{300, 300});
  // One 300-weight factored block (Gram at m = 10: 300·10 doubles) weighs
  // as much as ... the three dense 100-blocks (3·100² floats) are heavier.
  const auto mixed = make_blocks(std::vector<int64_t>{300, 100, 100, 100}, 300);
  const BlockPartition q = partition_blocks(mixed, 10, InverseMethod::kAuto, 2);
  CHECK(q.first_block == std::vector<int64_t>{0, 1, 4});
  // More ranks than blocks: some own nothing.
  const BlockPartition r =
      partition_blocks(make_blocks(std::vector<int64_t>{5}, 5), 3, InverseMethod::kAuto, 3);
  CHECK(r.first_block.front() == 0);
  CHECK(r.first_block.back() == 1);
  CHECK(std::is_sorted(r.first_block.begin(), r.first_block.end()));
  CHECK(inverse_bytes(100, 60, InverseMethod::kAuto) == 100 * 100 * 4);
  CHECK(inverse_bytes(300, 10, InverseMethod::kAuto) == 300 * 10 * 8);
}

TEST_CASE("distributed_block_inverse: this rank's blocks of the single process's inverse") {
  Communicator& comm = world();
  const Problem problem = make_problem();
  const int64_t d = problem.set.numel();
  const std::vector<float> grads = make_gradients(d), mask = problem.set.flat_mask();
  const GradientBank whole(d, grads), mine = my_rows(grads, d, comm);
  const std::vector<double> sums_whole = [&] {
    std::vector<double> s(static_cast<size_t>(d), 0.0);
    for (int64_t i = 0; i < kSamples; ++i)
      for (int64_t q = 0; q < d; ++q) s[q] += grads[i * d + q];
    return s;
  }();
  for (const int64_t block_size : {16, 100})  // dense; factored (2m <= n)
    for (const int64_t piece_bytes : {int64_t{1}, int64_t{2000}, int64_t{1} << 20}) {
      CAPTURE(block_size);
      CAPTURE(piece_bytes);
      const std::vector<Block> blocks = make_blocks(problem.set.layer_sizes(), block_size);
      const InverseOptions options{1e-3, InverseMethod::kAuto, 32, 0.0};
      const BlockInverse single = block_fisher_inverse(whole, blocks, options, mask);
      const BlockPartition p = partition_blocks(blocks, kSamples, options.method, comm.size());
      std::vector<double> sums;
      const BlockInverse spread =
          distributed_block_inverse(comm, mine, blocks, p, options, mask, &sums, piece_bytes);
      const int me = comm.rank();
      const int64_t first = p.column_start[me];
      CHECK(spread.dim() == p.columns(me));
      CHECK(spread.num_blocks() == p.first_block[me + 1] - p.first_block[me]);
      bool same = sums.size() == static_cast<size_t>(p.columns(me));
      for (int64_t b = 0; same && b < spread.num_blocks(); ++b) {
        const int64_t sb = p.first_block[me] + b;
        same = spread.blocks()[b].begin + first == blocks[sb].begin &&
               spread.factored(b) == single.factored(sb) && spread.dense(b) == single.dense(sb);
      }
      for (int64_t q = 0; same && q < p.columns(me); ++q)
        same = spread.diagonal()[q] == single.diagonal()[first + q] &&
               sums[q] == sums_whole[first + q];
      CHECK(same);
    }
}

TEST_CASE("gather_rows rebuilds the bank from every rank's rows") {
  Communicator& comm = world();
  const int64_t d = 11;
  std::vector<float> all(static_cast<size_t>(kSamples * d));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<float>(i);
  const GradientBank mine = my_rows(all, d, comm);
  const GradientBank rows = gather_rows(comm, mine);
  CHECK(rows.rows() == kSamples);
  CHECK(std::vector<float>(rows.data(), rows.data() + kSamples * d) == all);
}

TEST_CASE("distributed WoodFisher and WoodTaylor: the single process's masks and weights") {
  Communicator& comm = world();
  SingleProcess solo;
  for (const int64_t block_size : {16, 100, 1000})  // dense blocks; factored (2m <= n); per layer
    for (const ObsUpdate update : {ObsUpdate::kExact, ObsUpdate::kSummed})
      for (const Selection selection : {Selection::kGlobal, Selection::kPerLayer})
        for (const bool first_order : {false, true}) {
          CAPTURE(block_size);
          CAPTURE(first_order);
          CAPTURE(update == ObsUpdate::kExact ? "exact" : "summed");
          CAPTURE(selection == Selection::kGlobal ? "global" : "per-layer");
          Problem one = make_problem(), many = make_problem();
          const int64_t d = one.set.numel();
          const std::vector<float> grads = make_gradients(d);
          const GradientBank whole(d, grads);
          const GradientBank mine = my_rows(grads, d, comm);
          WoodFisherOptions wf;
          wf.update = update;
          wf.first_order = first_order;
          PruneStepOptions o;
          o.sparsity = 0.6;
          o.selection = selection;
          o.fisher.block_size = block_size;
          o.fisher.damp = 1e-3;
          WoodFisherPruner single(wf, &solo), spread(wf, &comm);
          const PruneReport r1 = prune_step(single, one.set, &whole, o);
          const PruneReport rn = prune_step(spread, many.set, &mine, o);
          check_same(one, many);
          CHECK(rn.predicted_loss == doctest::Approx(r1.predicted_loss).epsilon(1e-9));
          CHECK(rn.quadratic_loss == doctest::Approx(r1.quadratic_loss).epsilon(1e-9));
          // Each rank keeps only its blocks' inverse.
          int64_t covered = 0;
          for (int64_t n : comm.allgather(spread.inverse().dim())) covered += n;
          CHECK(covered == d);
          if (comm.size() > 1)
            CHECK(spread.inverse().memory_bytes() < single.inverse().memory_bytes());
          // A second step on the new weights and masks (fresh prepare) agrees too.
          o.sparsity = 0.8;
          prune_step(single, one.set, &whole, o);
          prune_step(spread, many.set, &mine, o);
          check_same(one, many);
        }
}

TEST_CASE("distributed diagonal Fisher: the single process's masks and weights") {
  Communicator& comm = world();
  for (const Selection selection : {Selection::kGlobal, Selection::kPerLayer}) {
    Problem one = make_problem(), many = make_problem();
    const int64_t d = one.set.numel();
    const std::vector<float> grads = make_gradients(d);
    const GradientBank whole(d, grads);
    const GradientBank mine = my_rows(grads, d, comm);
    PruneStepOptions o;
    o.sparsity = 0.7;
    o.selection = selection;
    DiagFisherPruner single, spread(&comm);
    prune_step(single, one.set, &whole, o);
    prune_step(spread, many.set, &mine, o);
    check_same(one, many);
  }
}
