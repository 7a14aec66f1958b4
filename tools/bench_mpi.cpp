// spruce-bench-mpi: what several MPI ranks buy (README, "Scaling out with
// MPI"). Start it with mpirun; every figure is for the whole job, printed by
// rank 0.
//
//   train       data-parallel SGD steps of a registry model on random images:
//               each rank runs forward/backward on its shard of the global
//               batch (--batch), GradientAverager sums the gradients, every
//               rank steps. Reports global images/s (median step time, the
//               slowest rank's), time per step in the gradient allreduce and
//               the bytes it moves, and apart from it the time the ranks
//               wait for the slowest one's backward (a barrier before it).
//   woodfisher  one WoodFisher prune step (to 50 %) of ResNet-20's conv +
//               linear weights from m random gradients (N(0, 1)·1e-3, as
//               spruce-bench), each rank holding its shard of the rows:
//               time of prepare() (gradient redistribution + block inverses)
//               and of the whole step, and the largest per-rank inverse
//               memory (BlockInverse::memory_bytes) and peak RSS.
//
// Compare runs alternately (see README): e.g. mpirun -np 2 ... --threads 1,
// then -np 1 --threads 1, then -np 1 --threads 2, several rounds. On a loaded
// machine with autogroup scheduling, all ranks in mpirun's session share one
// session's CPU: start each rank as `setsid -w spruce-bench-mpi ...` there.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/error.h"
#include "core/ops/loss.h"
#include "core/parallel.h"
#include "core/random.h"
#include "models/registry.h"
#include "optim/data_parallel.h"
#include "optim/sgd.h"
#include "pruning/prune_step.h"
#include "pruning/woodfisher_pruner.h"
#include "tools/common/args.h"

using namespace spruce;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

/// The slowest rank's value.
double max_over_ranks(Communicator& comm, double v) {
  comm.allreduce_max(std::span<double>(&v, 1));
  return v;
}

std::unique_ptr<Module> make_model(const std::string& name, int64_t channels) {
  models::ModelConfig cfg;
  cfg.in_channels = channels;
  cfg.num_classes = 10;
  if (name.rfind("resnet", 0) == 0) cfg.options["shortcut"] = "A";  // spruce-bench's ResNet-20
  return models::build_model(name, cfg);
}

void bench_train(Communicator& comm, const std::string& model_name, int64_t batch, int64_t warmup,
                 int64_t iters) {
  auto model = make_model(model_name, 1);
  const auto [first, last] = shard(batch, comm.rank(), comm.size());
  if (last == first)
    throw UsageError("--batch-size " + std::to_string(batch) + " leaves a rank no sample");
  Generator gen(0);  // the same global batch on every rank; each takes its rows
  const Tensor all = Tensor::randn({batch, 1, 28, 28}, gen);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (auto& v : labels) v = static_cast<int32_t>(gen.below(10));
  const Tensor x = Tensor::from_data(
      {last - first, 1, 28, 28},
      std::span<const float>(all.data() + first * 784, static_cast<size_t>((last - first) * 784)));
  const std::vector<int32_t> y(labels.begin() + first, labels.begin() + last);
  optim::Sgd opt(model->named_parameters(),
                 {.lr = 0.01, .momentum = 0.9, .nesterov = true, .weight_decay = 5e-4});
  optim::GradientAverager averager(comm, model->named_parameters());
  model->train();
  std::vector<double> step_s, reduce_s, wait_s;
  for (int64_t i = 0; i < warmup + iters; ++i) {
    comm.barrier();
    const auto t0 = Clock::now();
    opt.zero_grad();
    ops::cross_entropy((*model)(x), y).backward();
    // The wait for the slowest rank's backward, apart from the exchange itself.
    const auto t_wait = Clock::now();
    comm.barrier();
    const double wait = seconds_since(t_wait);
    const double before = averager.seconds();
    averager.average(last - first, batch);
    const double reduce = averager.seconds() - before;
    opt.step();
    const double step = max_over_ranks(comm, seconds_since(t0));
    if (i >= warmup) {
      step_s.push_back(step);
      reduce_s.push_back(max_over_ranks(comm, reduce));
      wait_s.push_back(max_over_ranks(comm, wait));
    }
  }
  const double step = median(step_s);
  std::printf(
      "RESULT section=train model=%s ranks=%d threads=%d batch=%lld img_per_s=%.1f step_s=%.5f "
      "allreduce_s=%.5f wait_s=%.5f allreduce_mib=%.2f rss_mib=%.0f\n",
      model_name.c_str(), comm.size(), num_threads(), static_cast<long long>(batch),
      static_cast<double>(batch) / step, step, median(reduce_s), median(wait_s),
      static_cast<double>(averager.bytes_per_step()) / (1 << 20),
      max_over_ranks(comm, peak_rss_mib()));
}

void bench_woodfisher(Communicator& comm, int64_t c, int64_t m) {
  auto model = make_model("resnet20", 1);
  pruning::PrunableSet set;
  for (const auto& name : model->prunable_parameter_names()) set.add(name, model->parameter(name));
  const int64_t d = set.numel();
  const auto [first, last] = shard(m, comm.rank(), comm.size());
  Generator gen(3);  // every rank draws all rows and keeps its own
  std::vector<float> mine, row(static_cast<size_t>(d));
  mine.reserve(static_cast<size_t>((last - first) * d));
  for (int64_t i = 0; i < m; ++i) {
    for (float& v : row) v = 1e-3f * gen.normal();
    if (i >= first && i < last) mine.insert(mine.end(), row.begin(), row.end());
  }
  const pruning::GradientBank bank(d, std::move(mine));
  const double rss_before = max_over_ranks(comm, peak_rss_mib());
  pruning::WoodFisherPruner pruner({}, &comm);
  pruning::PruneStepOptions o;
  o.sparsity = 0.5;
  o.fisher.block_size = c;
  o.fisher.damp = 1e-5;
  comm.barrier();
  const auto t0 = Clock::now();
  const pruning::PruneReport report = pruning::prune_step(pruner, set, &bank, o);
  const double total = max_over_ranks(comm, seconds_since(t0));
  const double inverse = max_over_ranks(comm, report.inverse_seconds);
  const double memory =
      max_over_ranks(comm, static_cast<double>(pruner.inverse().memory_bytes()) / (1 << 20));
  std::printf(
      "RESULT section=woodfisher ranks=%d threads=%d c=%lld m=%lld d=%lld prepare_s=%.3f "
      "step_s=%.3f inverse_mib_per_rank=%.1f rss_before_mib=%.0f rss_mib=%.0f\n",
      comm.size(), num_threads(), static_cast<long long>(c), static_cast<long long>(m),
      static_cast<long long>(d), inverse, total, memory, rss_before,
      max_over_ranks(comm, peak_rss_mib()));
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_tool("spruce-bench-mpi", [&] {
    std::string section = "train", model = "resnet20";
    int64_t batch = 128, threads = 1, warmup = 3, iters = 10, c = 100, m = 400;
    cli::Args a("spruce-bench-mpi",
                "Data-parallel training and distributed WoodFisher, under mpirun.");
    a.add_choice("section", &section, {"train", "woodfisher"}, "what to measure");
    a.add_choice("model", &model, models::model_names(), "train: model (1x28x28 input)");
    a.add_int("batch-size", &batch, "train: global batch, split over the ranks", 1);
    a.add_deprecated("batch", "batch-size");
    a.add_int("threads", &threads, "threads per rank", 1, 256);
    a.add_int("warmup", &warmup, "train: untimed steps", 0);
    a.add_int("iters", &iters, "train: timed steps (median reported)", 1);
    a.add_int("block-size", &c, "woodfisher: block size c", 1);
    a.add_int("fisher-samples", &m, "woodfisher: gradients m", 1);
    if (!a.parse(argc, argv)) return 0;
    set_num_threads(static_cast<int>(threads));
    Communicator& comm = world();
    if (section == "train")
      bench_train(comm, model, batch, warmup, iters);
    else
      bench_woodfisher(comm, c, m);
    return 0;
  });
}
