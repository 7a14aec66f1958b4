// The sgemm, fisher and woodfisher sections of spruce-bench (bench_kernels.h).
#include "tools/bench_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "core/error.h"
#include "core/ops/gemm.h"
#include "core/parallel.h"
#include "core/random.h"
#include "pruning/blocks.h"
#include "pruning/fisher_gradients.h"
#include "pruning/model_pruning.h"
#include "pruning/woodbury.h"
#include "tools/bench_util.h"

namespace spruce::bench {

namespace {

// ---------------------------------------------------------------------------
// sgemm roofline

struct GemmRow {
  int64_t n = 0;
  Stat blas;  // cblas_sgemm with OpenBLAS lent every thread (BlasThreadsGuard)
  Stat pool;  // ops::sgemm: blocks of C on our pool, single-threaded OpenBLAS each
};

/// GFLOP/s of one product path, median over iterations, one figure per run.
template <class F>
Stat time_gemm(int64_t n, int64_t runs, int64_t warmup, F&& once) {
  const int64_t iters = n >= 2048 ? 5 : 15;
  std::vector<double> per_run;
  for (int64_t i = 0; i < warmup; ++i) once();
  for (int64_t k = 0; k < runs; ++k) {
    std::vector<double> t;
    for (int64_t i = 0; i < iters; ++i) {
      const auto t0 = Clock::now();
      once();
      t.push_back(seconds_since(t0));
    }
    per_run.push_back(2.0 * static_cast<double>(n) * n * n / median(t) / 1e9);
  }
  return Stat::of(per_run);
}

// The machine's roofline is what OpenBLAS reaches with all threads on one
// large product (the figure torch.mm is compared with). Our thread policy
// keeps OpenBLAS single-threaded during training and splits GEMMs on our pool
// (ops::sgemm), so that path is shown as well: it is what the models use.
GemmRow bench_sgemm(int64_t n, int64_t runs, int64_t warmup) {
  Generator gen(1);
  const Tensor a = Tensor::randn({n, n}, gen), b = Tensor::randn({n, n}, gen);
  Tensor c = Tensor::zeros({n, n});
  GemmRow row{n, {}, {}};
  {
    BlasThreadsGuard all_threads;
    row.blas = time_gemm(n, runs, warmup, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n,
                  0.f, c.data(), n);
    });
  }
  row.pool = time_gemm(n, runs, warmup, [&] {
    ops::sgemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  });
  return row;
}

// ---------------------------------------------------------------------------
// Fisher gradient collection

struct FisherRow {
  std::string kind;
  int64_t m = 0, batch = 0;
  Stat seconds;
};

FisherRow bench_fisher(int64_t m, int64_t batch, int64_t runs) {
  const Shape chw{1, 28, 28};
  auto model = make_model("resnet20", 1);
  // Every conv and linear weight, as grad_collect_bench.py collects (268,048
  // values); the masks live in the set only, so the forward has no mask op.
  pruning::PrunableSet set;
  for (const auto& name : model->prunable_parameter_names()) set.add(name, model->parameter(name));
  Generator gen(2);
  std::vector<std::pair<Tensor, std::vector<int32_t>>> batches;
  for (int64_t i = 0; i < m; ++i) {
    std::vector<int32_t> y(static_cast<size_t>(batch));
    for (auto& v : y) v = static_cast<int32_t>(gen.uniform(0.f, 10.f)) % 10;
    batches.emplace_back(Tensor::randn({batch, chw[0], chw[1], chw[2]}, gen), std::move(y));
  }
  pruning::GradientBank bank(set.numel(), m);
  auto collect = [&](int64_t count) {
    bank.clear();
    int64_t next = 0;
    pruning::collect_fisher_gradients(
        *model, set, count, [&] { return batches[static_cast<size_t>(next++)]; }, bank);
  };
  collect(std::min<int64_t>(5, m));  // warm-up
  std::vector<double> t;
  for (int64_t k = 0; k < runs; ++k) {
    const auto t0 = Clock::now();
    collect(m);
    t.push_back(seconds_since(t0));
  }
  return {batch == 1 ? "per-sample" : "per-minibatch", m, batch, Stat::of(t)};
}

// ---------------------------------------------------------------------------
// WoodFisher block inverse

struct WoodRow {
  int64_t c = 0, m = 0, blocks = 0, d = 0;
  Stat seconds;
  double memory_mib = 0;
  double rank1_s = NAN;      // the rank-1 loop over every block (measured or extrapolated)
  int64_t rank1_blocks = 0;  // blocks actually timed
  bool rank1_extrapolated = false;
};

WoodRow bench_woodfisher(int64_t c, int64_t m, int64_t runs, double rank1_budget) {
  auto model = make_model("resnet20", 1);
  std::vector<int64_t> sizes;
  for (const auto& name : model->prunable_parameter_names())
    sizes.push_back(model->parameter(name).numel());
  int64_t d = 0;
  for (int64_t s : sizes) d += s;
  const auto blocks = pruning::make_blocks(sizes, c);
  pruning::GradientBank bank(d, m);
  Generator gen(3);
  std::vector<float> row(static_cast<size_t>(d));
  for (int64_t i = 0; i < m; ++i) {
    for (float& v : row) v = 1e-3f * gen.normal();  // as woodfisher_bench.py: N(0, 1) * 1e-3
    bank.add(row);
  }
  pruning::InverseOptions opt;
  opt.damp = 1e-5;
  WoodRow r;
  r.c = c, r.m = m, r.blocks = static_cast<int64_t>(blocks.size()), r.d = d;
  std::vector<double> t;
  for (int64_t k = 0; k < runs; ++k) {
    const auto t0 = Clock::now();
    const pruning::BlockInverse inv = pruning::block_fisher_inverse(bank, blocks, opt);
    t.push_back(seconds_since(t0));
    r.memory_mib = static_cast<double>(inv.memory_bytes()) / (1 << 20);
  }
  r.seconds = Stat::of(t);

  if (rank1_budget > 0) {
    // The rank-1 recursion costs ~ m n^2 per block: time whole blocks in
    // parallel batches until the budget is spent, then scale by sum n^2.
    double all_work = 0, done_work = 0;
    for (const auto& b : blocks) all_work += static_cast<double>(b.size()) * b.size();
    const auto t0 = Clock::now();
    size_t next = 0;
    const size_t batch = static_cast<size_t>(num_threads());
    while (next < blocks.size() && seconds_since(t0) < rank1_budget) {
      const size_t end = std::min(blocks.size(), next + batch);
      parallel_for(
          static_cast<int64_t>(next), static_cast<int64_t>(end), 1, [&](int64_t lo, int64_t hi) {
            for (int64_t b = lo; b < hi; ++b) {
              const auto& blk = blocks[static_cast<size_t>(b)];
              pruning::woodbury_rank1_inverse(bank.data() + blk.begin, m, blk.size(), d, opt.damp);
            }
          });
      for (size_t b = next; b < end; ++b)
        done_work += static_cast<double>(blocks[b].size()) * blocks[b].size();
      next = end;
    }
    const double spent = seconds_since(t0);
    r.rank1_blocks = static_cast<int64_t>(next);
    r.rank1_extrapolated = next < blocks.size();
    r.rank1_s = spent * all_work / done_work;
  }
  return r;
}

}  // namespace

cli::Json run_sgemm_section(int64_t threads, int64_t runs, int64_t warmup) {
  std::printf(
      "\n## sgemm roofline (square n x n, GFLOP/s = 2 n^3 / t, %lld threads)\n"
      "# roofline = cblas_sgemm with OpenBLAS on all threads (BlasThreadsGuard);\n"
      "# ops::sgemm = the models' path (C split on our pool, 1-thread OpenBLAS per block)\n"
      "%-6s %-28s %s\n",
      static_cast<long long>(threads), "n", "roofline (OpenBLAS)", "ops::sgemm (pool)");
  cli::Json rows = cli::Json::array();
  for (int64_t n : {1024, 2048}) {
    const GemmRow g = bench_sgemm(n, runs, warmup);
    std::printf("%-6lld %-28s %s\n", static_cast<long long>(n), cell(g.blas, "%.1f").c_str(),
                cell(g.pool, "%.1f").c_str());
    std::fflush(stdout);
    rows.push_back({{"n", n}, {"gflops", json_stat(g.blas)}, {"gflops_pool", json_stat(g.pool)}});
  }
  return rows;
}

cli::Json run_fisher_section(int64_t m, int64_t batch_size, int64_t runs) {
  std::printf(
      "\n## Fisher gradient collection (ResNet-20 A, 1x28x28, eval mode, all conv + linear "
      "weights)\n%-14s %5s %6s %-22s %s\n",
      "kind", "m", "batch", "seconds", "ms/grad");
  cli::Json rows = cli::Json::array();
  for (int64_t batch : {int64_t{1}, batch_size}) {
    const FisherRow f = bench_fisher(m, batch, runs);
    std::printf("%-14s %5lld %6lld %-22s %.2f\n", f.kind.c_str(), static_cast<long long>(f.m),
                static_cast<long long>(f.batch), cell(f.seconds, "%.3f").c_str(),
                f.seconds.med / static_cast<double>(f.m) * 1e3);
    std::fflush(stdout);
    rows.push_back({{"kind", f.kind},
                    {"fisher_samples", f.m},
                    {"fisher_batch", f.batch},
                    {"seconds", json_stat(f.seconds)}});
  }
  return rows;
}

cli::Json run_woodfisher_section(const std::vector<std::string>& settings, int64_t runs,
                                 double rank1_budget) {
  std::printf(
      "\n## WoodFisher block inverse (ResNet-20 1x28x28 conv + linear weights, random "
      "gradients, lambda 1e-5)\n%-6s %-6s %7s %-22s %9s %-s\n",
      "c", "m", "blocks", "block_fisher_inverse s", "MiB", "rank-1 loop s");
  cli::Json rows = cli::Json::array();
  for (const auto& cm : settings) {
    const size_t x = cm.find('x');
    if (x == std::string::npos) throw UsageError("--woodfisher: expected CxM, got '" + cm + "'");
    const int64_t c = std::stoll(cm.substr(0, x)), m = std::stoll(cm.substr(x + 1));
    if (c < 1 || m < 1) throw UsageError("--woodfisher: expected positive CxM, got '" + cm + "'");
    const WoodRow w = bench_woodfisher(c, m, runs, rank1_budget);
    std::string r1 = "-";
    if (!std::isnan(w.rank1_s))
      r1 = fmt("%.1f", w.rank1_s) +
           (w.rank1_extrapolated
                ? " (extrapolated from " + std::to_string(w.rank1_blocks) + " blocks)"
                : "");
    std::printf("%-6lld %-6lld %7lld %-22s %9.1f %s\n", static_cast<long long>(c),
                static_cast<long long>(m), static_cast<long long>(w.blocks),
                cell(w.seconds, "%.2f").c_str(), w.memory_mib, r1.c_str());
    std::fflush(stdout);
    rows.push_back({{"block_size", c},
                    {"fisher_samples", m},
                    {"blocks", w.blocks},
                    {"d", w.d},
                    {"seconds", json_stat(w.seconds)},
                    {"memory_mib", w.memory_mib},
                    {"rank1_seconds", w.rank1_s},
                    {"rank1_blocks_timed", w.rank1_blocks},
                    {"rank1_extrapolated", w.rank1_extrapolated}});
  }
  return rows;
}

}  // namespace spruce::bench
