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
//
// Each section lives in its own file: bench_kernels.cpp (sgemm, fisher,
// woodfisher), bench_models.cpp (models), bench_sparse.cpp (sparse), their
// shared helpers in bench_util.h; this file holds the flags and the order.
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "models/registry.h"
#include "tools/bench_kernels.h"
#include "tools/bench_models.h"
#include "tools/bench_sparse.h"
#include "tools/bench_util.h"
#include "tools/common/args.h"
#include "tools/common/json.h"

using namespace spruce;

namespace {

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
  for (const auto& sh : s.shapes) bench::parse_shape(sh);
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

  if (want("sgemm")) j["sgemm"] = bench::run_sgemm_section(s.threads, s.runs, s.warmup);
  if (want("models")) {
    bench::ChildSpec base{"", "", s.batch, s.threads, s.iters, s.infer_iters, s.warmup};
    j["models"] = bench::run_models_section(s.models, s.shapes, base, s.runs);
  }
  if (want("fisher")) j["fisher"] = bench::run_fisher_section(s.fisher_m, s.fisher_mb, s.runs);
  if (want("woodfisher"))
    j["woodfisher"] = bench::run_woodfisher_section(s.woodfisher, s.wf_runs, s.rank1_budget);

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
      auto number = [&](int i, const char* flag) { return cli::to_int(flag, argv[i]); };
      bench::ChildSpec c{argv[2],
                         argv[3],
                         number(4, "child BATCH"),
                         number(5, "child THREADS"),
                         number(6, "child ITERS"),
                         number(7, "child INFER_ITERS"),
                         number(8, "child WARMUP")};
      return bench::run_child(c);
    });
  }
  return cli::run_tool("spruce-bench", [&] { return run(argc, argv); });
}
