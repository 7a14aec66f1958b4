// spruce-bench: measures the workloads of the PyTorch comparison (described in
// tools/README.md, "Benchmarks"), so the two can be compared side by side in
// one session on the same machine.
//
//   models      ResNet-20 (option A, as the PyTorch reference) and MobileNetV1
//               at 1x28x28 and 3x32x32: training-step images/s (forward,
//               cross-entropy, backward, SGD with momentum + Nesterov + weight
//               decay, post-step mask hook), inference images/s (eval mode,
//               no grad), GFLOP/s from the conv + linear multiply-adds per
//               image (train = 3 x 2 x MACs x img/s, inference = 2 x MACs x
//               img/s, as the PyTorch comparison counts them) and peak resident memory.
//               Every run of a configuration is a fresh process (the bench
//               re-executes itself with a hidden --child flag), so ru_maxrss is
//               that configuration's own peak, read right after training.
//   sgemm       GFLOP/s at 1024^2 and 2048^2: the roofline is cblas_sgemm
//               with OpenBLAS lent all threads (BlasThreadsGuard), as torch.mm;
//               ops::sgemm (the models' path: C split on our pool) is shown too.
//   fisher      collecting m Fisher gradients of ResNet-20's conv + linear
//               weights (1x28x28, eval mode) with collect_fisher_gradients,
//               per sample (batch 1) and per mini-batch (batch --fisher-batch).
//   sparse      dense against sparse inference of pruned ResNet-20 B and
//               MobileNetV1, model-file sizes and the layer crossover (not in
//               the default sections; see tools/bench_sparse.cpp).
//   woodfisher  the block-diagonal inverse Fisher of the same weights from m
//               random gradients, for (c, m) settings, through
//               block_fisher_inverse, and the plain rank-1 Woodbury loop for
//               comparison (timed on the first blocks within a budget and
//               extrapolated by block size when it would take longer).
//
// Timings are medians over timed iterations after warm-up; with --runs R each
// figure is the median of R runs, shown with the [min..max] of the runs.
// A readable table goes to stdout; --json writes every figure to a file.
#include <cblas.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops/gemm.h"
#include "core/ops/loss.h"
#include "core/ops/mac_counter.h"
#include "core/parallel.h"
#include "core/random.h"
#include "models/registry.h"
#include "optim/sgd.h"
#include "pruning/blocks.h"
#include "pruning/fisher_gradients.h"
#include "pruning/model_pruning.h"
#include "pruning/woodbury.h"
#include "tools/bench_sparse.h"
#include "tools/common/args.h"
#include "tools/common/json.h"
#include "tools/common/report.h"

using namespace spruce;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Median of a set of runs with their spread, for "x [lo..hi]" cells.
struct Stat {
  double med = NAN, lo = NAN, hi = NAN;
  static Stat of(const std::vector<double>& v) {
    if (v.empty()) return {};
    return {median(v), *std::min_element(v.begin(), v.end()),
            *std::max_element(v.begin(), v.end())};
  }
};

/// CPU seconds used by the whole process (all threads) so far. On a shared
/// machine a step's CPU time varies much less than its wall time.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// "1x28x28" -> {1, 28, 28}.
Shape parse_shape(const std::string& s) {
  Shape out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, 'x')) {
    char* end = nullptr;
    const long v = std::strtol(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || v < 1) throw UsageError("--shapes: bad shape '" + s + "'");
    out.push_back(v);
  }
  if (out.size() != 3) throw UsageError("--shapes: expected CxHxW, got '" + s + "'");
  return out;
}

std::unique_ptr<Module> make_model(const std::string& name, int64_t in_channels) {
  models::ModelConfig cfg;
  cfg.in_channels = in_channels;
  cfg.num_classes = 10;
  if (name.rfind("resnet", 0) == 0) cfg.options["shortcut"] = "A";  // the PyTorch reference's
  cfg.seed = 0;
  return models::build_model(name, cfg);
}

/// Conv + linear multiply-adds of one image through `model` (eval, no grad).
int64_t macs_per_image(Module& model, const Shape& chw) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  ops::MacCounter counter;
  model(Tensor::zeros({1, chw[0], chw[1], chw[2]}));
  model.train(was_training);
  return counter.total();
}

// ---------------------------------------------------------------------------
// models: one configuration in a child process

struct ChildSpec {
  std::string model;
  std::string shape;
  int64_t batch = 128, threads = 1, iters = 10, infer_iters = 10, warmup = 3;
};

/// Runs one configuration and prints "RESULT key=value ..." for the parent.
int run_child(const ChildSpec& c) {
  set_num_threads(static_cast<int>(c.threads));
  const Shape chw = parse_shape(c.shape);
  auto model = make_model(c.model, chw[0]);
  const int64_t macs = macs_per_image(*model, chw);
  Generator gen(0);
  const Tensor x = Tensor::randn({c.batch, chw[0], chw[1], chw[2]}, gen);
  std::vector<int32_t> y(static_cast<size_t>(c.batch));
  for (auto& v : y) v = static_cast<int32_t>(gen.uniform(0.f, 10.f)) % 10;
  const double rss_before = peak_rss_mib();

  optim::SgdOptions so;
  so.lr = 0.01, so.momentum = 0.9, so.nesterov = true, so.weight_decay = 5e-4;
  optim::Sgd opt(model->named_parameters(), so);
  Module* m = model.get();
  opt.add_post_step_hook([m](optim::Sgd&) { m->apply_masks(); });
  auto train_step = [&] {
    opt.zero_grad();
    Tensor loss = ops::cross_entropy((*m)(x), y);
    loss.backward();
    opt.step();
  };

  model->train();
  for (int64_t i = 0; i < c.warmup; ++i) train_step();
  std::vector<double> tt, tc;
  for (int64_t i = 0; i < c.iters; ++i) {
    const auto t0 = Clock::now();
    const double c0 = process_cpu_seconds();
    train_step();
    tt.push_back(seconds_since(t0));
    tc.push_back(process_cpu_seconds() - c0);
  }
  const double rss_train = peak_rss_mib();

  model->eval();
  std::vector<double> ti;
  {
    NoGradGuard no_grad;
    for (int64_t i = 0; i < c.warmup; ++i) (*m)(x);
    for (int64_t i = 0; i < c.infer_iters; ++i) {
      const auto t0 = Clock::now();
      (*m)(x);
      ti.push_back(seconds_since(t0));
    }
  }
  std::printf(
      "RESULT macs=%lld params=%lld train_s=%.9g train_min_s=%.9g train_cpu_s=%.9g infer_s=%.9g "
      "infer_min_s=%.9g rss_before=%.3f rss_train=%.3f rss_end=%.3f\n",
      static_cast<long long>(macs), static_cast<long long>(model->num_parameters()), median(tt),
      *std::min_element(tt.begin(), tt.end()), median(tc), median(ti),
      *std::min_element(ti.begin(), ti.end()), rss_before, rss_train, peak_rss_mib());
  return 0;
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("spruce-bench: cannot read /proc/self/exe");
  buf[n] = '\0';
  return buf;
}

/// Runs the child for one configuration and parses its RESULT line.
std::map<std::string, double> spawn_child(const ChildSpec& c) {
  std::string cmd = "'";
  cmd += self_exe();
  cmd += "' --child";
  for (const std::string& arg :
       {c.model, c.shape, std::to_string(c.batch), std::to_string(c.threads),
        std::to_string(c.iters), std::to_string(c.infer_iters), std::to_string(c.warmup)})
    cmd += " " + arg;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw Error("spruce-bench: cannot start " + cmd);
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  const int status = pclose(p);
  std::map<std::string, double> out;
  const size_t at = text.find("RESULT ");
  if (status != 0 || at == std::string::npos)
    throw Error("spruce-bench: child '" + cmd + "' failed: " + text);
  std::istringstream is(text.substr(at + 7));
  std::string kv;
  while (is >> kv) {
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) out[kv.substr(0, eq)] = std::stod(kv.substr(eq + 1));
  }
  return out;
}

struct ModelRow {
  std::string model, shape;
  int64_t batch = 0, threads = 0, params = 0, macs = 0;
  Stat train_ips, train_ms, train_cpu_ms, infer_ips, rss;
  double train_min_ms = NAN;
};

ModelRow bench_model(const ChildSpec& spec, int64_t runs) {
  ModelRow r;
  r.model = spec.model, r.shape = spec.shape, r.batch = spec.batch, r.threads = spec.threads;
  std::vector<double> tips, tms, tcpu, iips, rss, tmin;
  for (int64_t k = 0; k < runs; ++k) {
    auto res = spawn_child(spec);
    r.macs = static_cast<int64_t>(res["macs"]);
    r.params = static_cast<int64_t>(res["params"]);
    tips.push_back(static_cast<double>(spec.batch) / res["train_s"]);
    tms.push_back(res["train_s"] * 1e3);
    tmin.push_back(res["train_min_s"] * 1e3);
    tcpu.push_back(res["train_cpu_s"] * 1e3);
    iips.push_back(static_cast<double>(spec.batch) / res["infer_s"]);
    rss.push_back(res["rss_train"]);
  }
  r.train_ips = Stat::of(tips), r.train_ms = Stat::of(tms), r.infer_ips = Stat::of(iips);
  r.train_cpu_ms = Stat::of(tcpu);
  r.rss = Stat::of(rss);
  r.train_min_ms = *std::min_element(tmin.begin(), tmin.end());
  return r;
}

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

// ---------------------------------------------------------------------------
// Report

std::string cell(const Stat& s, const char* f) {
  if (std::isnan(s.med)) return "-";
  if (s.lo == s.hi) return fmt(f, s.med);
  return fmt(f, s.med) + " [" + fmt(f, s.lo) + ".." + fmt(f, s.hi) + "]";
}

cli::Json json_stat(const Stat& s) { return {{"median", s.med}, {"min", s.lo}, {"max", s.hi}}; }

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

struct Settings {
  int64_t threads = default_num_threads(), batch = 128, runs = 3, warmup = 3, iters = 10;
  int64_t infer_iters = 10, fisher_m = 100, fisher_mb = 32, wf_runs = 1;
  double rank1_budget = 20;
  std::vector<std::string> models{"resnet20", "mobilenet_v1"}, shapes{"1x28x28", "3x32x32"};
  std::vector<std::string> sections{"sgemm", "models", "fisher", "woodfisher"};
  std::vector<std::string> woodfisher{"100x1000", "1000x100"};
  std::string json;
  bench::SparseSettings sparse;
};

int run(int argc, char** argv) {
  Settings s;
  cli::Args a("spruce-bench",
              "Throughput, memory and roofline figures of spruce, comparable with the same\n"
              "workloads run in PyTorch (tools/README.md, \"Benchmarks\"; compare ratios\n"
              "measured in one session).");
  a.add_int("threads", &s.threads, "threads for BLAS and our loops", 1, 256);
  a.add_int("batch-size", &s.batch, "batch size for the model benchmarks", 1);
  a.add_string_list("models", &s.models, "models to time", models::model_names());
  a.add_string_list("shapes", &s.shapes, "input shapes CxHxW");
  a.add_int("runs", &s.runs, "runs per figure (each model run is a fresh process); medians shown",
            1);
  a.add_int("warmup", &s.warmup, "untimed warm-up iterations per run", 0);
  a.add_int("iters", &s.iters, "timed training steps per run", 1);
  a.add_int("infer-iters", &s.infer_iters, "timed inference batches per run", 1);
  a.add_string_list("sections", &s.sections, "what to measure",
                    {"sgemm", "models", "fisher", "woodfisher", "sparse"});
  a.add_int("fisher-samples", &s.fisher_m, "m: Fisher gradients to collect", 1);
  a.add_int("fisher-batch", &s.fisher_mb, "b: mini-batch size of the per-minibatch collection", 1);
  a.add_deprecated("batch", "batch-size");
  a.add_deprecated("fisher-m", "fisher-samples");
  a.add_deprecated("fisher-mb", "fisher-batch");
  a.add_string_list("woodfisher", &s.woodfisher,
                    "block inverse settings CxM (block size x gradients)");
  a.add_int("wf-runs", &s.wf_runs, "runs per block-inverse setting", 1);
  a.add_double("rank1-budget", &s.rank1_budget,
               "seconds per setting for the rank-1 loop (extrapolated beyond; 0 = skip)", 0);
  a.add_string("json", &s.json, "also write every figure to this JSON file");
  a.add_flag("quick", &s.sparse.quick, "sparse section: few iterations (under a minute)");
  a.add_int("sparse-pairs", &s.sparse.pairs, "sparse section: alternated dense/sparse pairs", 1);
  a.add_string("sparse-resnet", &s.sparse.resnet, "sparse section: ResNet-20 B checkpoint");
  a.add_string("sparse-mobilenet", &s.sparse.mobilenet, "sparse section: MobileNetV1 .npz");
  if (!a.parse(argc, argv)) return 0;
  for (const auto& sh : s.shapes) parse_shape(sh);
  set_num_threads(static_cast<int>(s.threads));
  auto want = [&](const char* sec) {
    return std::find(s.sections.begin(), s.sections.end(), sec) != s.sections.end();
  };

  const std::string date = now_utc();
  std::printf("# spruce-bench  %s UTC  threads=%lld  %s\n# OpenBLAS %s (core %s)\n", date.c_str(),
              static_cast<long long>(s.threads), cpu_name().c_str(), openblas_get_config(),
              openblas_get_corename());
  std::fflush(stdout);
  cli::Json j = {{"date_utc", date},
                 {"threads", s.threads},
                 {"cpu", cpu_name()},
                 {"openblas", std::string(openblas_get_config())}};

  if (want("sgemm")) {
    std::printf(
        "\n## sgemm roofline (square n x n, GFLOP/s = 2 n^3 / t, %lld threads)\n"
        "# roofline = cblas_sgemm with OpenBLAS on all threads (BlasThreadsGuard);\n"
        "# ops::sgemm = the models' path (C split on our pool, 1-thread OpenBLAS per block)\n"
        "%-6s %-28s %s\n",
        static_cast<long long>(s.threads), "n", "roofline (OpenBLAS)", "ops::sgemm (pool)");
    j["sgemm"] = cli::Json::array();
    for (int64_t n : {1024, 2048}) {
      const GemmRow g = bench_sgemm(n, s.runs, s.warmup);
      std::printf("%-6lld %-28s %s\n", static_cast<long long>(n), cell(g.blas, "%.1f").c_str(),
                  cell(g.pool, "%.1f").c_str());
      std::fflush(stdout);
      j["sgemm"].push_back(
          {{"n", n}, {"gflops", json_stat(g.blas)}, {"gflops_pool", json_stat(g.pool)}});
    }
  }

  if (want("models")) {
    std::printf(
        "\n## models (batch %lld; train = fwd + CE + bwd + SGD momentum/nesterov/wd + post-step;\n"
        "##   GFLOP/s: train 3 x 2 x MACs x img/s, inference 2 x MACs x img/s; RSS: ru_maxrss "
        "after "
        "training, fresh process)\n",
        static_cast<long long>(s.batch));
    std::printf("%-13s %-8s %7s %-24s %8s %7s %-26s %7s %-20s\n", "model", "input", "MMACs",
                "train img/s", "step ms", "GFLOP/s", "infer img/s", "GFLOP/s", "peak RSS MiB");
    std::fflush(stdout);
    j["models"] = cli::Json::array();
    for (const auto& model : s.models)
      for (const auto& shape : s.shapes) {
        ChildSpec spec{model, shape, s.batch, s.threads, s.iters, s.infer_iters, s.warmup};
        const ModelRow r = bench_model(spec, s.runs);
        const double mm = static_cast<double>(r.macs);
        std::printf("%-13s %-8s %7.2f %-24s %8.1f %7.1f %-26s %7.1f %-20s\n", model.c_str(),
                    shape.c_str(), mm / 1e6, cell(r.train_ips, "%.1f").c_str(), r.train_ms.med,
                    6 * mm * r.train_ips.med / 1e9, cell(r.infer_ips, "%.1f").c_str(),
                    2 * mm * r.infer_ips.med / 1e9, cell(r.rss, "%.0f").c_str());
        std::fflush(stdout);
        j["models"].push_back({{"model", model},
                               {"shape", shape},
                               {"batch_size", s.batch},
                               {"threads", s.threads},
                               {"params", r.params},
                               {"macs_per_img", r.macs},
                               {"runs", s.runs},
                               {"iters", s.iters},
                               {"warmup", s.warmup},
                               {"train_img_s", json_stat(r.train_ips)},
                               {"train_step_ms", json_stat(r.train_ms)},
                               {"train_step_ms_min", r.train_min_ms},
                               {"train_step_cpu_ms", json_stat(r.train_cpu_ms)},
                               {"train_gflops", 6 * mm * r.train_ips.med / 1e9},
                               {"infer_img_s", json_stat(r.infer_ips)},
                               {"infer_gflops", 2 * mm * r.infer_ips.med / 1e9},
                               {"peak_rss_train_mib", json_stat(r.rss)}});
      }
  }

  if (want("fisher")) {
    std::printf(
        "\n## Fisher gradient collection (ResNet-20 A, 1x28x28, eval mode, all conv + linear "
        "weights)\n%-14s %5s %6s %-22s %s\n",
        "kind", "m", "batch", "seconds", "ms/grad");
    j["fisher"] = cli::Json::array();
    for (int64_t batch : {int64_t{1}, s.fisher_mb}) {
      const FisherRow f = bench_fisher(s.fisher_m, batch, s.runs);
      std::printf("%-14s %5lld %6lld %-22s %.2f\n", f.kind.c_str(), static_cast<long long>(f.m),
                  static_cast<long long>(f.batch), cell(f.seconds, "%.3f").c_str(),
                  f.seconds.med / static_cast<double>(f.m) * 1e3);
      std::fflush(stdout);
      j["fisher"].push_back({{"kind", f.kind},
                             {"fisher_samples", f.m},
                             {"fisher_batch", f.batch},
                             {"seconds", json_stat(f.seconds)}});
    }
  }

  if (want("woodfisher")) {
    std::printf(
        "\n## WoodFisher block inverse (ResNet-20 1x28x28 conv + linear weights, random "
        "gradients, lambda 1e-5)\n%-6s %-6s %7s %-22s %9s %-s\n",
        "c", "m", "blocks", "block_fisher_inverse s", "MiB", "rank-1 loop s");
    j["woodfisher"] = cli::Json::array();
    for (const auto& cm : s.woodfisher) {
      const size_t x = cm.find('x');
      if (x == std::string::npos) throw UsageError("--woodfisher: expected CxM, got '" + cm + "'");
      const int64_t c = std::stoll(cm.substr(0, x)), m = std::stoll(cm.substr(x + 1));
      if (c < 1 || m < 1) throw UsageError("--woodfisher: expected positive CxM, got '" + cm + "'");
      const WoodRow w = bench_woodfisher(c, m, s.wf_runs, s.rank1_budget);
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
      j["woodfisher"].push_back({{"block_size", c},
                                 {"fisher_samples", m},
                                 {"blocks", w.blocks},
                                 {"d", w.d},
                                 {"seconds", json_stat(w.seconds)},
                                 {"memory_mib", w.memory_mib},
                                 {"rank1_seconds", w.rank1_s},
                                 {"rank1_blocks_timed", w.rank1_blocks},
                                 {"rank1_extrapolated", w.rank1_extrapolated}});
    }
  }

  if (want("sparse")) {
    s.sparse.batch = s.batch;
    j["sparse"] = bench::run_sparse_section(s.sparse);
  }

  if (!s.json.empty()) cli::write_json_file(s.json, j);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Hidden: `--child MODEL SHAPE BATCH THREADS ITERS INFER_ITERS WARMUP` runs
  // one model configuration in this fresh process (see spawn_child).
  if (argc == 9 && std::string(argv[1]) == "--child") {
    return cli::run_tool("spruce-bench", [&] {
      ChildSpec c{argv[2],
                  argv[3],
                  std::stoll(argv[4]),
                  std::stoll(argv[5]),
                  std::stoll(argv[6]),
                  std::stoll(argv[7]),
                  std::stoll(argv[8])};
      return run_child(c);
    });
  }
  return cli::run_tool("spruce-bench", [&] { return run(argc, argv); });
}
