// spruce-bench's `sparse` section (see bench_sparse.h).
//
// Models: the committed dense checkpoints (ResNet-20 B and MobileNetV1 on
// Fashion-MNIST, 1x28x28), pruned in memory by global magnitude over the
// registry's default prunable weights (pruning::prune_step with the magnitude
// pruner) to 0, 50, 75, 90, 95 and 98 % (and 89 % for MobileNetV1, its
// gradual target); and FLOP-aware (the -flops methods: magnitude over
// multiply-adds per weight, a sparsity being the fraction of prunable
// multiply-adds removed) to 90 and 95 % (ResNet-20 B) and 89 % (MobileNetV1),
// rows "R20B flops" and "MobV1 flops". For each: inference images/s at --batch and batch-1
// latency, dense kernels (ops::SparseMode::kDense) against the default
// (kAuto: sparse where a layer's density is at most its geometry's crossover), in
// alternated pairs (dense then sparse, `pairs` times); figures are medians,
// and the speed-up is the median of the per-pair ratios. Batch 1 is timed
// twice: on --threads threads, and on the count each side's InferenceThreads
// picks ("auto": what a server running the model through it sees), and so is
// the batch ("b auto": by the plan it picks, whole or in chunks, as spruce-eval
// runs it). Weights are
// compressed at the first inference call (untimed warm-up), as a model is when
// it enters inference. MMACs: multiply-adds per image the dense model runs and
// those that remain on the sparse path at --batch (the sparse kernels count only
// their nonzeros; a single image runs more layers sparse); GFLOP/s = 2 x remaining MACs x img/s.
// Sizes: the checkpoint and its compact (bitmask + nonzeros, masks included) form, as spruce-prune
// --sparse-out writes, against the dense model's checkpoint (no masks).
//
// Crossover: single layers of both models, one of each geometry class, at
// batch --batch, dense conv2d_fused against sparse_conv2d_fused at densities
// 0.5 .. 0.1; the density where the sparse kernel becomes faster is what
// ops::sparse_conv_max_density is set from.
#include "tools/bench_sparse.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "core/autograd.h"
#include "core/io/checkpoint.h"
#include "core/io/sparse_checkpoint.h"
#include "core/ops/conv2d.h"
#include "core/ops/mac_counter.h"
#include "core/ops/sparse_conv2d.h"
#include "core/ops/sparse_spmm.h"
#include "core/random.h"
#include "layers/inference_threads.h"
#include "models/registry.h"
#include "pruning/flop_cost.h"
#include "pruning/magnitude_pruner.h"
#include "pruning/model_pruning.h"
#include "pruning/prune_step.h"
#include "tools/common/model_io.h"

namespace spruce::bench {

namespace {

using Clock = std::chrono::steady_clock;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Seconds per call of fn, over `iters` calls.
template <class F>
double per_call(int64_t iters, F&& fn) {
  const double t0 = now_s();
  for (int64_t i = 0; i < iters; ++i) fn();
  return (now_s() - t0) / static_cast<double>(iters);
}

/// Median seconds of single calls.
template <class F>
double median_call(int64_t iters, F&& fn) {
  std::vector<double> t;
  for (int64_t i = 0; i < iters; ++i) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  return median_of(t);
}

struct Paired {
  double dense = 0, sparse = 0, ratio = 0;  // medians; ratio = dense time / sparse time
};

/// Alternates dense and sparse timings `pairs` times (`time` returns seconds).
template <class T>
Paired paired(int64_t pairs, T&& time) {
  std::vector<double> d, s, r;
  for (int64_t p = 0; p < pairs; ++p) {
    ops::set_sparse_mode(ops::SparseMode::kDense);
    d.push_back(time());
    ops::set_sparse_mode(ops::SparseMode::kAuto);
    s.push_back(time());
    r.push_back(d.back() / s.back());
  }
  return {median_of(d), median_of(s), median_of(r)};
}

/// Multiply-adds per image of a forward over the batch x (the layers' dense or
/// sparse choice depends on the batch size: ops::sparse_conv_max_density).
int64_t macs_per_image(Module& m, const Tensor& x) {
  ops::MacCounter c;
  m.forward(x);
  return c.total() / x.size(0);
}

uintmax_t file_bytes(const std::string& path) { return std::filesystem::file_size(path); }

struct Layer {
  const char* name;
  int64_t C, OC, H, k, stride, pad;
};

cli::Json crossover(const SparseSettings& s) {
  // One layer of each geometry class of ops::sparse_conv_max_density.
  const Layer layers[] = {{"r20 3x3 16->16 @28", 16, 16, 28, 3, 1, 1},
                          {"r20 3x3 64->64 @7", 64, 64, 7, 3, 1, 1},
                          {"r20 3x3 32->64 s2 @14", 32, 64, 14, 3, 2, 1},
                          {"r20 1x1 16->32 s2 @28", 16, 32, 28, 1, 2, 0},
                          {"mb 1x1 128->128 @14", 128, 128, 14, 1, 1, 0},
                          {"mb 1x1 256->256 @7", 256, 256, 7, 1, 1, 0},
                          {"mb 1x1 512->512 @4", 512, 512, 4, 1, 1, 0}};
  std::vector<double> densities{0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.1};
  if (s.quick) densities = {0.4, 0.3, 0.2, 0.1};
  std::printf(
      "\n## crossover: dense conv2d_fused time / sparse_conv2d_fused time, batch %lld\n"
      "##   (used: the layer runs sparse at density <= its crossover)\n%-24s %-9s",
      static_cast<long long>(s.batch), "layer", "crossover");
  for (double d : densities) std::printf(" d=%-5.2f", d);
  std::printf("\n");
  cli::Json rows = cli::Json::array();
  Generator gen(1);
  NoGradGuard no_grad;
  for (const Layer& L : layers) {
    const int64_t out_side = (L.H + 2 * L.pad - L.k) / L.stride + 1;
    const double used = ops::sparse_conv_max_density(L.k, L.stride, out_side * out_side, s.batch);
    std::printf("%-24s %-9.2f", L.name, used);
    std::fflush(stdout);
    Tensor x = Tensor::randn({s.batch, L.C, L.H, L.H}, gen);
    Tensor w = Tensor::randn({L.OC, L.C, L.k, L.k}, gen);
    Tensor scale = Tensor::rand({L.OC}, gen, 0.5f, 1.5f), shift = Tensor::randn({L.OC}, gen);
    const ops::Conv2dOptions o{.stride = L.stride, .padding = L.pad};
    cli::Json row = {{"layer", L.name},
                     {"crossover", used},
                     {"densities", densities},
                     {"dense_over_sparse_time", cli::Json::array()}};
    for (double density : densities) {
      Tensor u = Tensor::rand(w.shape(), gen);
      Tensor wd = w.clone();
      for (int64_t i = 0; i < wd.numel(); ++i)
        if (u.at(i) >= density) wd.data()[i] = 0.f;
      ops::SparseWeightCache cache;
      const ops::ConvEpilogue e{.scale = scale, .shift = shift, .relu = true};
      ops::conv2d_fused(x, wd, e, o), ops::sparse_conv2d_fused(x, wd, Tensor(), cache, e, o);
      const int64_t iters = s.quick ? 1 : 3;
      const Paired p = paired(s.quick ? 3 : s.pairs, [&] {
        return ops::sparse_mode() == ops::SparseMode::kDense
                   ? per_call(iters, [&] { ops::conv2d_fused(x, wd, e, o); })
                   : per_call(iters,
                              [&] { ops::sparse_conv2d_fused(x, wd, Tensor(), cache, e, o); });
      });
      std::printf(" %7.2f", p.ratio);
      std::fflush(stdout);
      row["dense_over_sparse_time"].push_back(p.ratio);
    }
    std::printf("\n");
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

cli::Json run_sparse_section(const SparseSettings& in) {
  SparseSettings s = in;
  if (s.quick) s.pairs = 3, s.iters = 2, s.single = 10;
  struct Subject {
    const char* label;
    std::string path;
    cli::ModelSpec spec;
    std::vector<double> sparsities;
    // FLOP-aware magnitude (the -flops methods): a sparsity is then the
    // fraction of prunable multiply-adds removed, which the speed follows.
    bool flops = false;
  };
  cli::ModelSpec mb_spec;
  mb_spec.name = "mobilenet_v1";
  mb_spec.config.in_channels = 1;
  mb_spec.config.num_classes = 10;
  const std::vector<Subject> subjects{
      {"ResNet-20 B", s.resnet, {}, {0, 0.5, 0.75, 0.9, 0.95, 0.98}},
      {"R20B flops", s.resnet, {}, {0.9, 0.95}, true},
      {"MobileNetV1", s.mobilenet, mb_spec, {0, 0.5, 0.75, 0.89, 0.9, 0.95, 0.98}},
      {"MobV1 flops", s.mobilenet, mb_spec, {0.89}, true}};
  const std::filesystem::path tmp = std::filesystem::temp_directory_path() /
                                    ("spruce-bench-sparse-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  std::printf(
      "\n## sparse inference (1x28x28; global magnitude masks on the committed dense checkpoints;\n"
      "##   dense = dense kernels, sparse = layers at most as dense as their geometry's crossover\n"
      "##   (ops::sparse_conv_max_density; linear %.2f) on the sparse kernels (%s);\n"
      "##   medians of %lld alternated pairs; speed-up = median of pair ratios)\n",
      ops::kSparseMaxDensity, ops::sparse::path_name(ops::sparse::active_path()),
      static_cast<long long>(s.pairs));
  std::printf(
      "##   b1: one image on --threads threads; b1 auto: on the count layers/inference_threads.h\n"
      "##   picks for each model (threads used after the ms); batch auto: the batch by the plan\n"
      "##   it picks (images/s, then the samples per forward: 0 = the whole batch at once)\n");
  std::printf(
      "%-12s %6s %8s %8s %-9s %-9s %6s %7s %-10s %-10s %6s %-12s %-12s %6s %9s %9s %6s %-13s "
      "%-13s %6s\n",
      "model", "sparse", "MMACs", "remain", "dense", "sparse", "x", "GFLOP/s", "dense b1",
      "sparse b1", "x b1", "dense auto", "sparse auto", "x auto", "ckpt KiB", "compact", "%",
      "dense b auto", "sparse b auto", "x b auto");
  cli::Json j = {{"batch_size", s.batch},
                 {"pairs", s.pairs},
                 {"iters", s.iters},
                 {"single", s.single},
                 {"linear_max_density", ops::kSparseMaxDensity},
                 {"simd", ops::sparse::path_name(ops::sparse::active_path())},
                 {"models", cli::Json::array()}};
  for (const Subject& sub : subjects) {
    cli::LoadedModel loaded = cli::load_model(sub.path, sub.spec);
    const NamedTensors dense_state = [&] {
      NamedTensors st;
      for (const auto& [k, v] : loaded.module->state_dict()) st.emplace_back(k, v.clone());
      return st;
    }();
    const double unpruned_kib = [&] {  // the dense model's file: no masks
      io::Checkpoint plain;
      cli::put_model(plain, loaded.spec, *loaded.module);
      const std::string path = (tmp / "unpruned.ckpt").string();
      io::save_checkpoint(path, plain);
      return static_cast<double>(file_bytes(path)) / 1024;
    }();
    for (double sparsity : sub.sparsities) {
      auto model = models::build_model(loaded.spec.name, loaded.spec.config);
      model->load_state_dict(dense_state);
      if (sparsity > 0) {
        pruning::PrunableSet set =
            pruning::attach_masks(*model, models::default_prunable_patterns(loaded.spec.name));
        if (sub.flops) pruning::attach_flop_costs(*model, set, {1, 28, 28});
        pruning::MagnitudePruner pruner;
        pruning::prune_step(
            pruner, set, nullptr,
            {.sparsity = sparsity,
             .target = sub.flops ? pruning::Target::kFlops : pruning::Target::kWeights});
      }
      model->eval();
      Generator gen(7);
      Tensor xb = Tensor::randn({s.batch, 1, 28, 28}, gen);
      Tensor x1 = Tensor::randn({1, 1, 28, 28}, gen);
      NoGradGuard no_grad;
      ops::set_sparse_mode(ops::SparseMode::kDense);
      const int64_t dense_macs = macs_per_image(*model, xb);
      ops::set_sparse_mode(ops::SparseMode::kAuto);
      const int64_t remain_macs = macs_per_image(*model, xb);
      const Paired tb =
          paired(s.pairs, [&] { return per_call(s.iters, [&] { model->forward(xb); }); });
      const Paired t1 =
          paired(s.pairs, [&] { return median_call(s.single, [&] { model->forward(x1); }); });
      // Each kernel choice is its own model for the thread count: decided
      // first (untimed), then timed like t1.
      InferenceThreads dense_threads, sparse_threads;
      auto auto_threads = [&]() -> InferenceThreads& {
        return ops::sparse_mode() == ops::SparseMode::kDense ? dense_threads : sparse_threads;
      };
      for (ops::SparseMode mode : {ops::SparseMode::kDense, ops::SparseMode::kAuto}) {
        ops::set_sparse_mode(mode);
        for (const Tensor* x : {&x1, &xb})
          while (auto_threads().chosen(x->shape()).threads == 0) auto_threads().forward(*model, *x);
      }
      const Paired ta = paired(s.pairs, [&] {
        return median_call(s.single, [&] { auto_threads().forward(*model, x1); });
      });
      // The batch as the tools run it: by the plan InferenceThreads chose
      // (whole, or in chunks of a few samples a thread).
      const Paired tba = paired(
          s.pairs, [&] { return per_call(s.iters, [&] { auto_threads().forward(*model, xb); }); });
      const int dense_auto = dense_threads.chosen(x1.shape()).threads;
      const int sparse_auto = sparse_threads.chosen(x1.shape()).threads;
      const int64_t dense_chunk = dense_threads.chosen(xb.shape()).chunk;
      const int64_t sparse_chunk = sparse_threads.chosen(xb.shape()).chunk;
      const double bsz = static_cast<double>(s.batch);
      const double dense_ips = bsz / tb.dense, sparse_ips = bsz / tb.sparse;
      const double dense_auto_ips = bsz / tba.dense, sparse_auto_ips = bsz / tba.sparse;

      io::Checkpoint ckpt;
      cli::put_model(ckpt, loaded.spec, *model);
      const std::string dense_path = (tmp / "dense.ckpt").string();
      const std::string compact_path = (tmp / "compact.ckpt").string();
      io::save_checkpoint(dense_path, ckpt);
      io::save_checkpoint(compact_path, io::compress_checkpoint(ckpt));
      const double dense_kib = unpruned_kib;
      const double compact_kib = static_cast<double>(file_bytes(compact_path)) / 1024;

      std::printf(
          "%-12s %5.0f%% %8.2f %8.2f %9.0f %9.0f %6.2f %7.1f %7.3f ms %7.3f ms %6.2f %7.3f ms %d "
          "%7.3f ms %d %6.2f %9.0f %9.0f %5.1f%% %9.0f %3lld %9.0f %3lld %6.2f\n",
          sub.label, sparsity * 100, dense_macs / 1e6, remain_macs / 1e6, dense_ips, sparse_ips,
          tb.ratio, 2.0 * remain_macs * sparse_ips / 1e9, t1.dense * 1e3, t1.sparse * 1e3, t1.ratio,
          ta.dense * 1e3, dense_auto, ta.sparse * 1e3, sparse_auto, ta.ratio, dense_kib,
          compact_kib, 100 * compact_kib / dense_kib, dense_auto_ips,
          static_cast<long long>(dense_chunk), sparse_auto_ips,
          static_cast<long long>(sparse_chunk), tba.ratio);
      std::fflush(stdout);
      j["models"].push_back({{"model", sub.label},
                             {"sparsity", sparsity},
                             {"target", sub.flops ? "flops" : "weights"},
                             {"dense_macs", dense_macs},
                             {"remaining_macs", remain_macs},
                             {"dense_img_s", dense_ips},
                             {"sparse_img_s", sparse_ips},
                             {"speedup", tb.ratio},
                             {"dense_b1_ms", t1.dense * 1e3},
                             {"sparse_b1_ms", t1.sparse * 1e3},
                             {"speedup_b1", t1.ratio},
                             {"dense_b1_auto_ms", ta.dense * 1e3},
                             {"dense_b1_auto_threads", dense_auto},
                             {"sparse_b1_auto_ms", ta.sparse * 1e3},
                             {"sparse_b1_auto_threads", sparse_auto},
                             {"speedup_b1_auto", ta.ratio},
                             {"dense_auto_img_s", dense_auto_ips},
                             {"dense_auto_chunk", dense_chunk},
                             {"sparse_auto_img_s", sparse_auto_ips},
                             {"sparse_auto_chunk", sparse_chunk},
                             {"speedup_auto", tba.ratio},
                             {"ckpt_bytes", file_bytes(dense_path)},
                             {"dense_model_ckpt_bytes", static_cast<int64_t>(unpruned_kib * 1024)},
                             {"compact_bytes", file_bytes(compact_path)}});
    }
  }
  std::filesystem::remove_all(tmp);
  j["crossover"] = crossover(s);
  return j;
}

}  // namespace spruce::bench
