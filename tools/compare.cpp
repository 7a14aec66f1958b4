// spruce-compare: one trained checkpoint, pruning methods x sparsities x
// seeds, one-shot (no fine-tuning). Prints a table of test top-1 (mean and
// spread over seeds), a table of measured vs predicted loss increase, and
// writes results.csv, results.json and accuracy.svg (top-1 against sparsity,
// one line per method, the dense model dashed).
//
// For each seed the Fisher gradients are collected once at the dense weights
// and shared by every method and sparsity (with --steps > 1 each run
// re-collects at its current weights, as spruce-prune does). With
// --bn-recalibrate N every pruned model has its batch-norm running statistics
// re-estimated on N training batches (the same batches for every method and
// sparsity of a seed) before it is evaluated.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/communicator.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/stop_request.h"
#include "data/data_loader.h"
#include "models/registry.h"
#include "pruning/model_pruning.h"
#include "tools/common/args.h"
#include "tools/common/datasets.h"
#include "tools/common/evaluate.h"
#include "tools/common/json.h"
#include "tools/common/model_io.h"
#include "tools/common/pruning_run.h"
#include "tools/common/report.h"
#include "tools/common/svg_plot.h"

using namespace spruce;
namespace fs = std::filesystem;

namespace {
struct Row {
  std::string method;
  int64_t seed = 0;
  double target = 0, sparsity = 0, top1 = 0, loss = 0, predicted = 0, quadratic = 0, collect_s = 0,
         inverse_s = 0, total_s = 0, bn_s = 0;
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / static_cast<double>(v.size());
}

double stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

namespace {

struct Options {
  std::string model_path, out = "runs/compare", data = "fashion-mnist", data_dir;
  std::vector<std::string> methods{"magnitude", "magnitude-layer", "diagfisher", "woodfisher",
                                   "woodfisher-layer"};
  std::vector<double> sparsities{0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
  std::vector<std::string> seeds_text{"0"};
  std::vector<std::string> patterns;
  int64_t steps = 1, threads = default_num_threads(), eval_limit = 2000;
  bool all_layers = false;
  pruning::FisherOptions fisher;
  cli::BnRecalibration bn;
  cli::NpzModelFlags npz_model;
  double update_scale = 1.0;
  bool fisher_augment = false;
};

void declare(cli::Args& args, Options& o) {
  args.add_string("checkpoint", &o.model_path, "trained checkpoint or .npz file");
  args.add_string_list("methods", &o.methods, "pruning methods to compare");
  cli::add_update_scale_flag(args, o.update_scale);
  args.add_double_list("sparsities", &o.sparsities, "target sparsities", 0, 1, true);
  args.add_string_list("seeds", &o.seeds_text,
                       "Fisher sample seeds (one run of every method per seed)");
  args.add_int("steps", &o.steps, "prune in k steps, recomputing the Fisher in between", 1, 1000);
  args.add_string_list("patterns", &o.patterns,
                       "glob patterns of prunable weights (default: the model's)");
  args.add_flag("all-layers", &o.all_layers, "prune every conv and linear weight");
  cli::add_fisher_flags(args, o.fisher, nullptr, &o.fisher_augment);
  cli::add_bn_recalibration_flags(args, o.bn);
  args.add_choice("data", &o.data, cli::dataset_names(),
                  "data set (Fisher samples from train, evaluation on test)");
  args.add_string("data-dir", &o.data_dir,
                  "data set directory (default: the data set's standard place)");
  args.add_int(
      "eval-limit", &o.eval_limit,
      "evaluate on the first N test samples only (0 = all; the default keeps a sweep to minutes)",
      0);
  args.add_string("out", &o.out, "directory for results.csv, results.json and accuracy.svg");
  args.add_int("threads", &o.threads, "threads for BLAS and our loops", 1, 256);
  o.npz_model.add_to(args);
}

std::vector<int64_t> parse_seeds(const std::vector<std::string>& texts) {
  std::vector<int64_t> seeds;
  for (const auto& s : texts) {
    try {
      size_t used = 0;
      seeds.push_back(std::stoll(s, &used));
      if (used != s.size() || seeds.back() < 0) throw std::invalid_argument(s);
    } catch (const std::exception&) {
      throw UsageError("--seeds: expected non-negative integers, got '" + s + "'");
    }
  }
  return seeds;
}

/// The checkpoint under comparison, its dense weights and their evaluation.
struct Sweep {
  const Options& o;
  cli::PruningSession& session;
  NamedTensors dense_state;
  cli::EvalResult dense;
  data::TransformList fisher_transforms;  // of the Fisher samples (--fisher-augment)
};

void print_header(const Sweep& sw, size_t methods, size_t seeds) {
  const Options& o = sw.o;
  std::printf("model   %s  %s, %lld prunable weights in %lld layers\n", o.model_path.c_str(),
              sw.session.loaded.spec.describe().c_str(),
              static_cast<long long>(sw.session.set.numel()),
              static_cast<long long>(sw.session.set.size()));
  std::printf(
      "fisher  m=%lld b=%lld damp=%g block=%lld, %lld step(s); %zu method(s) x %zu sparsities x "
      "%zu seed(s)\n",
      static_cast<long long>(o.fisher.samples), static_cast<long long>(o.fisher.batch),
      o.fisher.damp, static_cast<long long>(o.fisher.block_size), static_cast<long long>(o.steps),
      methods, o.sparsities.size(), seeds);
  if (o.bn.enabled())
    std::printf(
        "bn      running statistics re-estimated after pruning on %lld batches of %lld training "
        "samples\n",
        static_cast<long long>(o.bn.batches), static_cast<long long>(o.bn.batch));
  std::fflush(stdout);
}

/// Prunes the dense weights to `sparsity` with `method`: one step with the
/// pruner prepared once for every sparsity (steps == 1), or o.steps steps
/// re-collecting the Fisher; fills the row's sparsity, predictions and times.
void prune_dense(Sweep& sw, const pruning::PruningMethod& method, pruning::Pruner& prepared,
                 double prepare_s, const pruning::GradientBank& bank, double collect_s,
                 int64_t seed, Row& row) {
  const Options& o = sw.o;
  if (o.steps == 1) {
    auto step = pruning::step_options(method, o.fisher, row.target);
    step.reuse_prepared = true;
    const auto rep = pruning::prune_step(prepared, sw.session.set,
                                         prepared.needs_fisher() ? &bank : nullptr, step);
    row.sparsity = rep.sparsity;
    row.predicted = rep.predicted_loss;
    row.quadratic = rep.quadratic_loss;
    row.collect_s = prepared.needs_fisher() ? collect_s : 0;
    row.inverse_s = prepare_s;
    row.total_s = rep.total_seconds + row.collect_s + prepare_s;
    return;
  }
  const auto res =
      cli::prune_one_shot(*sw.session.loaded.module, sw.session.set, method, row.target, o.steps,
                          sw.session.train, sw.fisher_transforms, o.fisher, seed, false);
  row.sparsity = res.back().report.sparsity;
  for (const auto& r : res) {
    row.predicted += r.report.predicted_loss;
    row.quadratic += r.report.quadratic_loss;
    row.collect_s += r.collect_seconds;
    row.inverse_s += r.report.inverse_seconds;
    row.total_s += r.report.total_seconds;
  }
}

/// Every method at every sparsity for one seed of the Fisher samples. With
/// one step the gradients are collected once at the dense weights and each
/// method's pruner prepared once for all sparsities.
std::vector<Row> run_seed(Sweep& sw, const std::vector<pruning::PruningMethod>& methods,
                          int64_t seed) {
  const Options& o = sw.o;
  Module& model = *sw.session.loaded.module;
  const auto& train = sw.session.train;
  const auto& tf = sw.session.transforms;
  const bool any_fisher = std::any_of(methods.begin(), methods.end(),
                                      [](const auto& m) { return m.pruner != "magnitude"; });
  pruning::GradientBank bank(sw.session.set.numel());
  double collect_s = 0;
  if (any_fisher && o.steps == 1) {
    model.load_state_dict(sw.dense_state);
    const auto t0 = std::chrono::steady_clock::now();
    bank = cli::collect_gradients(model, sw.session.set, train, sw.fisher_transforms, o.fisher,
                                  static_cast<uint64_t>(seed) * 1000003ULL + 1);
    collect_s = seconds_since(t0);
  }
  std::vector<Row> rows;
  for (const auto& method : methods) {
    auto pruner = pruning::make_pruner(method, &world());
    double prepare_s = 0;
    if (o.steps == 1) {
      model.load_state_dict(sw.dense_state);
      const auto t0 = std::chrono::steady_clock::now();
      pruner->prepare(sw.session.set, pruner->needs_fisher() ? &bank : nullptr, o.fisher);
      prepare_s = seconds_since(t0);
    }
    for (double s : o.sparsities) {
      model.load_state_dict(sw.dense_state);
      Row row{method.name(), seed, s};
      prune_dense(sw, method, *pruner, prepare_s, bank, collect_s, seed, row);
      // Same batches for every method and sparsity of this seed.
      row.bn_s = cli::recalibrate_bn(model, train, tf, o.bn,
                                     data::derive_seed(static_cast<uint64_t>(seed), {0xb2ca1}));
      const auto ev = cli::evaluate(model, sw.session.test, tf, 256, o.eval_limit);
      row.top1 = ev.accuracy;
      row.loss = ev.loss;
      std::printf("%-24s %5lld %8.2f%% %7.2f%% %10.4f %10.4f %10.4f %7.1fs\n", row.method.c_str(),
                  static_cast<long long>(seed), 100 * row.sparsity, 100 * row.top1,
                  row.loss - sw.dense.loss, row.predicted, row.quadratic, row.total_s);
      std::fflush(stdout);
      rows.push_back(row);
      if (StopOnSignal::requested_on_any(world())) return rows;  // compare() writes them
    }
  }
  return rows;
}

/// Prints mean top-1 over seeds (± sample std with several seeds) per method
/// and sparsity; returns the plot of those means.
cli::Plot print_summary(const Sweep& sw, const std::vector<pruning::PruningMethod>& methods,
                        const std::vector<Row>& rows, size_t seeds) {
  const Options& o = sw.o;
  std::printf("\ntest top-1 after one-shot pruning%s (dense %.2f%%)%s\n%-24s",
              o.bn.enabled() ? " and batch-norm recalibration" : "", 100 * sw.dense.accuracy,
              seeds > 1 ? ", mean ± std over seeds" : "", "method");
  for (double s : o.sparsities) std::printf(" %13.0f%%", 100 * s);
  std::printf("\n");
  cli::Plot plot{"One-shot pruning of " + sw.session.loaded.spec.name + " on " + o.data +
                     (o.bn.enabled() ? ", BN recalibrated" : ""),
                 "sparsity",
                 "test top-1 (%)",
                 {},
                 {}};
  plot.references.push_back({"dense", 100 * sw.dense.accuracy});
  for (const auto& method : methods) {
    std::printf("%-24s", method.name().c_str());
    cli::PlotSeries series{method.name(), {}, {}};
    for (double s : o.sparsities) {
      std::vector<double> acc;
      for (const auto& r : rows)
        if (r.method == method.name() && r.target == s) acc.push_back(100 * r.top1);
      if (seeds > 1)
        std::printf("  %6.2f ± %4.2f", mean(acc), stddev(acc));
      else
        std::printf(" %13.2f%%", mean(acc));
      series.x.push_back(100 * s);
      series.y.push_back(mean(acc));
    }
    std::printf("\n");
    plot.series.push_back(series);
  }
  return plot;
}

/// results.csv and results.json: one row per method, sparsity and seed.
void write_results(const Sweep& sw, const std::vector<Row>& rows, const cli::Plot& plot) {
  const Options& o = sw.o;
  cli::Json j = {{"checkpoint", o.model_path},        {"dense_top1", sw.dense.accuracy},
                 {"dense_loss", sw.dense.loss},       {"fisher_samples", o.fisher.samples},
                 {"fisher_batch", o.fisher.batch},    {"damp", o.fisher.damp},
                 {"block_size", o.fisher.block_size}, {"steps", o.steps},
                 {"bn_recalibrate", o.bn.batches},    {"bn_batch", o.bn.batch},
                 {"results", cli::Json::array()}};
  std::string csv =
      "method,seed,target_sparsity,sparsity,top1,test_loss,loss_increase,predicted_loss_increase,"
      "quadratic_loss_increase,collect_seconds,inverse_seconds,total_seconds,bn_recalibrate,bn_"
      "seconds\n";
  for (const auto& r : rows) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "%s,%lld,%.4f,%.6f,%.6f,%.6f,%.6f,%.6g,%.6g,%.3f,%.3f,%.3f,%lld,%.3f\n",
                  r.method.c_str(), static_cast<long long>(r.seed), r.target, r.sparsity, r.top1,
                  r.loss, r.loss - sw.dense.loss, r.predicted, r.quadratic, r.collect_s,
                  r.inverse_s, r.total_s, static_cast<long long>(o.bn.batches), r.bn_s);
    csv += line;
    j["results"].push_back({{"method", r.method},
                            {"seed", r.seed},
                            {"target_sparsity", r.target},
                            {"sparsity", r.sparsity},
                            {"top1", r.top1},
                            {"test_loss", r.loss},
                            {"loss_increase", r.loss - sw.dense.loss},
                            {"predicted_loss_increase", r.predicted},
                            {"quadratic_loss_increase", r.quadratic},
                            {"collect_seconds", r.collect_s},
                            {"inverse_seconds", r.inverse_s},
                            {"total_seconds", r.total_s},
                            {"bn_seconds", r.bn_s}});
  }
  cli::write_text_file((fs::path(o.out) / "results.csv").string(), csv);
  cli::write_json_file((fs::path(o.out) / "results.json").string(), j);
  // After a stop the plot lacks cells: results.csv and results.json hold what was done.
  if (StopOnSignal::requested() == 0)
    cli::write_text_file((fs::path(o.out) / "accuracy.svg").string(), plot.to_svg());
}

int compare(Options& o) {
  if (o.model_path.empty()) throw UsageError("--checkpoint is required (a trained checkpoint)");
  std::vector<pruning::PruningMethod> methods;
  for (const auto& m : o.methods) methods.push_back(pruning::parse_method(m, o.update_scale));
  const std::vector<int64_t> seeds = parse_seeds(o.seeds_text);
  std::sort(o.sparsities.begin(), o.sparsities.end());
  set_num_threads(static_cast<int>(o.threads));
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw IoError(o.out + ": cannot create the output directory: " + ec.message());

  cli::PruningSession session = cli::open_pruning_session(o.model_path, o.npz_model.spec(), o.data,
                                                          o.data_dir, o.patterns, o.all_layers);
  if (std::any_of(methods.begin(), methods.end(),
                  [](const auto& m) { return m.target == pruning::Target::kFlops; }))
    cli::attach_flop_costs(session);  // "-flops" methods: their sparsity counts multiply-adds
  Sweep sw{o,
           session,
           {},
           {},
           cli::fisher_transforms(o.data, session.train->image_shape().channels, o.fisher_augment)};
  for (const auto& [k, v] : session.loaded.module->state_dict())
    sw.dense_state.emplace_back(k, v.clone());
  print_header(sw, methods.size(), seeds.size());
  sw.dense =
      cli::evaluate(*session.loaded.module, session.test, session.transforms, 256, o.eval_limit);
  std::printf("dense   test loss %.4f  top-1 %.2f%%\n\n", sw.dense.loss, 100 * sw.dense.accuracy);
  // dL pred. is the pruner's own estimate (for the summed and no-update
  // WoodFisher variants and diagonal Fisher: the sum of the statistics);
  // dL quad. is ½δᵀFδ of the change actually applied, under the pruner's
  // Fisher model, so the two differ where the update is not the exact one.
  std::printf("%-24s %5s %9s %8s %10s %10s %10s %8s\n", "method", "seed", "sparsity", "top-1",
              "dL meas.", "dL pred.", "dL quad.", "time");
  std::fflush(stdout);

  // Ctrl-C or SIGTERM: finish the current result, write those done so far, exit 130/143.
  StopOnSignal stop(
      "spruce-compare: stopping after the current result (Ctrl-C again to quit at once)");
  std::vector<Row> rows;
  for (int64_t seed : seeds) {
    auto seed_rows = run_seed(sw, methods, seed);
    rows.insert(rows.end(), seed_rows.begin(), seed_rows.end());
    if (StopOnSignal::requested() != 0) break;
  }
  const cli::Plot plot = print_summary(sw, methods, rows, seeds.size());
  write_results(sw, rows, plot);
  if (StopOnSignal::requested() != 0)
    throw Stopped("stopped by " + std::string(StopOnSignal::signal_name()) + " after " +
                      std::to_string(rows.size()) + " results; wrote them to " + o.out +
                      "/results.csv and results.json (no accuracy.svg)",
                  StopOnSignal::exit_status());
  std::printf("\nwrote %s/results.csv, results.json, accuracy.svg\n", o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_tool("spruce-compare", [&] {
    Options o;
    cli::Args args(
        "spruce-compare --checkpoint CKPT",
        "Compares pruning methods one-shot on a trained checkpoint: methods x sparsities x seeds.\n"
        "Methods: " +
            cli::method_grammar() +
            "\n(-layer: per-layer selection; -summed, -noupdate, -scaleS: the OBS update of "
            "woodfisher\nand woodtaylor; -flops: FLOP-aware). Writes results.csv, results.json and "
            "accuracy.svg to --out.");
    declare(args, o);
    std::vector<char*> old_spellings = cli::old_model_flag_as_checkpoint(argc, argv);
    if (!args.parse(static_cast<int>(old_spellings.size()), old_spellings.data())) return 0;
    return compare(o);
  });
}
