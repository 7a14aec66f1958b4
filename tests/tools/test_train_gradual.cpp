// spruce-train with a gradual pruning schedule (pruning/README.md, "Gradual
// schedule"), end to end, for each pruner (woodfisher, diagfisher, magnitude,
// and magnitude with per-layer selection):
//
//   1. every pruning step happens at the scheduled time and prunes exactly
//      round(s_t · d) of the d prunable weights (round(s_t · d_l) per layer
//      with per-layer selection), s_t from the cubic formula computed here,
//      not by the library; the span (7 steps) is not a multiple of the
//      frequency (3), and the last step still reaches s_f exactly;
//   2. masked weights and their momentum are exactly zero in every
//      checkpoint and in final.npz, and masks only grow;
//   3. a run killed (SIGKILL) right after every one of its checkpoints and
//      resumed each time, so across every pruning step, ends with a final.npz
//      (parameters, buffers, masks) identical byte for byte to the run that
//      was never interrupted, with the same pruning.csv and log.csv apart
//      from their timing columns.
//
// The model is the smallest in the registry (mobilenet_v1 at width 0.1,
// d = 36689 prunable weights), trained on 96 random 28x28 images, 2 epochs of
// 5 steps of 16, one thread. Kills are exact: the LD_PRELOAD shim
// fault_shim.cpp raises SIGKILL at the first checkpoint rename of
// each process, so no timing is involved.
#include <doctest/doctest.h>
#include <signal.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/io/npz.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

// The schedule under test, in optimizer steps: pruning at 1, 4, 7 and 8
// (span 7, frequency 3), from s_i = 0.2 to s_f = 0.8.
constexpr int64_t kStart = 1, kEnd = 8, kEvery = 3;
constexpr double kInitial = 0.2, kFinal = 0.8;
constexpr int64_t kStepsPerEpoch = 5, kEpochs = 2;

// t_0, t_0 + Δt, ... before t_end, then t_end.
std::vector<int64_t> expected_steps() {
  std::vector<int64_t> steps;
  for (int64_t t = kStart; t < kEnd; t += kEvery) steps.push_back(t);
  steps.push_back(kEnd);
  return steps;
}

// s_t = s_f + (s_i − s_f)(1 − (t − t_0)/(t_end − t_0))³ (Zhu & Gupta).
double expected_target(int64_t t) {
  const double progress = static_cast<double>(t - kStart) / static_cast<double>(kEnd - kStart);
  return kFinal + (kInitial - kFinal) * std::pow(1.0 - progress, 3);
}

// Weights pruned for a target s of n: round(s·n), half away from zero
// (pruning/selection.h). The schedule is chosen so that no s·n lies near a
// half, where the two ways of evaluating the cubic could round differently.
int64_t expected_count(double s, int64_t n) {
  const double x = s * static_cast<double>(n);
  REQUIRE_MESSAGE(std::abs(x - std::floor(x) - 0.5) > 1e-6,
                  "s·n = " << x << " is too close to a half");
  return static_cast<int64_t>(std::floor(x + 0.5));
}

// The target in force at global step g, i.e. after the last pruning step t <= g
// (pruning at t happens before the optimizer step t); -1 before the first.
double target_before_step(int64_t g) {
  double s = -1;
  for (int64_t t : expected_steps())
    if (t <= g) s = expected_target(t);
  return s;
}

std::vector<std::string> train_args(const TempDir& dir, const std::string& out,
                                    const std::string& method,
                                    const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{"--data",
                             "mnist",
                             "--data-dir",
                             dir.file("data"),
                             "--model",
                             "mobilenet_v1",
                             "--width",
                             "0.1",
                             "--epochs",
                             std::to_string(kEpochs),
                             "--batch-size",
                             "16",
                             "--max-steps",
                             std::to_string(kStepsPerEpoch),
                             "--eval-limit",
                             "32",
                             "--prune-eval-limit",
                             "32",
                             "--threads",
                             "1",
                             "--out",
                             dir.file(out),
                             "--prune-method",
                             method,
                             "--prune-unit",
                             "step",
                             "--prune-start",
                             std::to_string(kStart),
                             "--prune-end",
                             std::to_string(kEnd),
                             "--prune-every",
                             std::to_string(kEvery),
                             "--initial-sparsity",
                             "0.2",
                             "--final-sparsity",
                             "0.8",
                             "--fisher-samples",
                             "8",
                             "--fisher-batch",
                             "4",
                             "--block-size",
                             "16"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> cols;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    cols.push_back(
        line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return cols;
    start = comma + 1;
  }
}

// The rows of a CSV file without the columns named in `timing`, which differ
// between any two runs.
std::vector<std::vector<std::string>> csv_without(const std::string& path,
                                                  const std::vector<std::string>& timing) {
  const std::vector<std::string> rows = lines(read_text(path));
  REQUIRE(!rows.empty());
  const std::vector<std::string> header = split(rows[0]);
  std::vector<std::vector<std::string>> out;
  for (const std::string& row : rows) {
    const std::vector<std::string> cols = split(row);
    REQUIRE_MESSAGE(cols.size() == header.size(), path << ": unexpected row " << row);
    std::vector<std::string> kept;
    for (size_t i = 0; i < cols.size(); ++i) {
      bool drop = false;
      for (const std::string& t : timing) drop = drop || header[i] == t;
      if (!drop) kept.push_back(cols[i]);
    }
    out.push_back(kept);
  }
  return out;
}

const std::vector<std::string> kPruneTiming{"collect_seconds", "inverse_seconds"};
const std::vector<std::string> kLogTiming{"epoch_seconds", "img_per_s"};

/// The 0/1 masks of a model's named tensors (checkpoint names carry `prefix`),
/// keyed by the parameter's name, in order.
struct Masks {
  std::vector<std::string> names;
  std::map<std::string, std::vector<float>> values;
  int64_t size() const {
    int64_t n = 0;
    for (const auto& [name, m] : values) n += static_cast<int64_t>(m.size());
    return n;
  }
  int64_t pruned(const std::string& name) const {
    int64_t n = 0;
    for (float v : values.at(name)) n += v == 0.f ? 1 : 0;
    return n;
  }
  int64_t pruned() const {
    int64_t n = 0;
    for (const std::string& name : names) n += pruned(name);
    return n;
  }
};

const Tensor* find(const io::NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

// Reads the masks of `tensors` and checks, for every masked entry, that the
// weight (and the optimizer velocity, when `velocity_prefix` is given) is
// exactly zero, and that every mask holds only 0 and 1.
Masks check_masks(const io::NamedTensors& tensors, const std::string& prefix,
                  const std::string& velocity_prefix, const std::string& what) {
  CAPTURE(what);
  Masks masks;
  const std::string suffix = "_mask";
  for (const auto& [full, mask] : tensors) {
    if (full.rfind(prefix, 0) != 0 || full.size() < prefix.size() + suffix.size() ||
        full.compare(full.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string name =
        full.substr(prefix.size(), full.size() - prefix.size() - suffix.size());
    CAPTURE(name);
    const Tensor* weight = find(tensors, prefix + name);
    REQUIRE(weight != nullptr);
    REQUIRE(weight->numel() == mask.numel());
    const Tensor* velocity =
        velocity_prefix.empty() ? nullptr : find(tensors, velocity_prefix + name);
    if (velocity != nullptr) REQUIRE(velocity->numel() == mask.numel());
    int64_t bad_mask = 0, nonzero_weight = 0, nonzero_velocity = 0;
    for (int64_t i = 0; i < mask.numel(); ++i) {
      const float m = mask.data()[i];
      bad_mask += m == 0.f || m == 1.f ? 0 : 1;
      if (m != 0.f) continue;
      nonzero_weight += weight->data()[i] == 0.f ? 0 : 1;
      if (velocity != nullptr) nonzero_velocity += velocity->data()[i] == 0.f ? 0 : 1;
    }
    CHECK(bad_mask == 0);
    CHECK(nonzero_weight == 0);
    CHECK(nonzero_velocity == 0);
    masks.names.push_back(name);
    masks.values[name].assign(mask.data(), mask.data() + mask.numel());
  }
  REQUIRE(!masks.names.empty());
  return masks;
}

// Masks only grow: every entry pruned in `before` is pruned in `after`.
void check_grows(const Masks& before, const Masks& after, const std::string& what) {
  CAPTURE(what);
  REQUIRE(before.names == after.names);
  for (const std::string& name : before.names) {
    CAPTURE(name);
    const auto& b = before.values.at(name);
    const auto& a = after.values.at(name);
    REQUIRE(a.size() == b.size());
    int64_t revived = 0;
    for (size_t i = 0; i < b.size(); ++i) revived += b[i] == 0.f && a[i] != 0.f ? 1 : 0;
    CHECK(revived == 0);
  }
}

// The pruned count expected for target s: globally, or layer by layer.
void check_count(const Masks& masks, double s, bool per_layer, const std::string& what) {
  CAPTURE(what);
  CAPTURE(s);
  if (s < 0) {
    CHECK(masks.pruned() == 0);
    return;
  }
  if (!per_layer) {
    CHECK(masks.pruned() == expected_count(s, masks.size()));
    return;
  }
  for (const std::string& name : masks.names) {
    CAPTURE(name);
    CHECK(masks.pruned(name) ==
          expected_count(s, static_cast<int64_t>(masks.values.at(name).size())));
  }
}

void check_gradual_run(const std::string& method, bool per_layer) {
  CAPTURE(method);
  TempDir dir;
  write_mnist(dir.path() / "data");

  // A: the uninterrupted run.
  expect_success(run(kTrain, train_args(dir, "a", method)));
  const std::vector<uint8_t> final_a = read_bytes(dir.file("a/final.npz"));
  const io::NamedTensors npz = io::read_npz(dir.file("a/final.npz"));
  const Masks final_masks = check_masks(npz, "", "", "final.npz");
  const int64_t d = final_masks.size();
  check_count(final_masks, kFinal, per_layer, "final.npz");
  {
    // The last step reaches s_f exactly: round(0.8·d) weights, not one less.
    const io::Checkpoint last = io::load_checkpoint(dir.file("a/last.ckpt"));
    const Masks ck = check_masks(last.tensors, "model/", "optim/", "a/last.ckpt");
    CHECK(ck.values == final_masks.values);
  }

  // pruning.csv: one row per scheduled step, at that step, with the formula's
  // target and a sparsity of exactly round(s_t·d)/d (printed to 6 decimals).
  const std::vector<std::vector<std::string>> prune_rows =
      csv_without(dir.file("a/pruning.csv"), kPruneTiming);
  const std::vector<int64_t> steps = expected_steps();
  REQUIRE(steps == std::vector<int64_t>{1, 4, 7, 8});
  REQUIRE(prune_rows.size() == steps.size() + 1);
  REQUIRE(prune_rows[0][0] == "unit");
  REQUIRE(prune_rows[0][1] == "t");
  REQUIRE(prune_rows[0][2] == "epoch");
  REQUIRE(prune_rows[0][3] == "step");
  REQUIRE(prune_rows[0][4] == "target");
  REQUIRE(prune_rows[0][5] == "sparsity");
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::vector<std::string>& row = prune_rows[i + 1];
    const int64_t t = steps[i];
    CAPTURE(t);
    CHECK(row[0] == "step");
    CHECK(row[1] == std::to_string(t));
    CHECK(row[2] == std::to_string(t / kStepsPerEpoch));
    CHECK(row[3] == std::to_string(t));
    const double s = expected_target(t);
    CHECK(std::abs(std::strtod(row[4].c_str(), nullptr) - s) <= 6e-7);
    if (!per_layer) {
      const double exact = static_cast<double>(expected_count(s, d)) / static_cast<double>(d);
      CHECK(std::abs(std::strtod(row[5].c_str(), nullptr) - exact) <= 6e-7);
    }
  }
  CHECK(prune_rows.back()[4] == "0.800000");

  // B: checkpoints after every step; each process is killed right after its
  // first checkpoint and the run resumed, up to the checkpoint before the
  // last (a kill after the last one loses the logs: see the test case below).
  const int64_t total_steps = kEpochs * kStepsPerEpoch;
  std::vector<int64_t> saved_steps;
  Masks previous;
  RunResult r = run(kTrain, train_args(dir, "b", method, {"--checkpoint-every", "1"}),
                    kill_at_checkpoint(1, "after"));
  for (int round = 0; r.signal == SIGKILL; ++round) {
    REQUIRE(round < total_steps);
    CHECK_FALSE(fs::exists(dir.file("b/final.npz")));
    const io::Checkpoint ck = io::load_checkpoint(dir.file("b/last.ckpt"));
    const int64_t g = std::atoll(ck.meta_value("train.global_step").c_str());
    saved_steps.push_back(g);
    const std::string what = "b/last.ckpt at global step " + std::to_string(g);
    const Masks masks = check_masks(ck.tensors, "model/", "optim/", what);
    REQUIRE(masks.size() == d);
    // Steps 0..g-1 have run: the last pruning step among them set the sparsity.
    check_count(masks, target_before_step(g - 1), per_layer, what);
    if (!previous.names.empty()) check_grows(previous, masks, what);
    previous = masks;
    r = run(kTrain, {"--resume", dir.file("b")},
            g + 1 < total_steps ? kill_at_checkpoint(1, "after") : std::vector<std::string>{});
  }
  expect_success(r);
  // The premise: a kill after each of the first 9 checkpoints (8 mid-epoch,
  // 1 at the first epoch's end), so the run was resumed after every pruning step.
  CHECK(saved_steps == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  check_grows(previous, check_masks(io::read_npz(dir.file("b/final.npz")), "", "", "b/final.npz"),
              "b/final.npz");

  CHECK(read_bytes(dir.file("b/final.npz")) == final_a);
  CHECK(csv_without(dir.file("b/pruning.csv"), kPruneTiming) == prune_rows);
  CHECK(csv_without(dir.file("b/log.csv"), kLogTiming) ==
        csv_without(dir.file("a/log.csv"), kLogTiming));
}

}  // namespace

TEST_CASE("spruce-train gradual pruning: woodfisher") { check_gradual_run("woodfisher", false); }

TEST_CASE("spruce-train gradual pruning: diagfisher") { check_gradual_run("diagfisher", false); }

TEST_CASE("spruce-train gradual pruning: magnitude") { check_gradual_run("magnitude", false); }

TEST_CASE("spruce-train gradual pruning: magnitude, per-layer selection") {
  check_gradual_run("magnitude-layer", true);
}

// A run killed right after its last checkpoint (the end of its last epoch,
// before the logs are written) and resumed has nothing left to train: it
// must still write log.csv and pruning.csv, as the uninterrupted run does
// (end_epoch() writes them after the checkpoint, so the resumed run must).
TEST_CASE(
    "spruce-train gradual pruning: killed after the last checkpoint, --resume writes the logs") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, train_args(dir, "a", "magnitude")));
  const RunResult killed =
      run(kTrain, train_args(dir, "b", "magnitude"), kill_at_checkpoint(kEpochs, "after"));
  REQUIRE(killed.signal == SIGKILL);
  expect_success(run(kTrain, {"--resume", dir.file("b")}));
  CHECK(read_bytes(dir.file("b/final.npz")) == read_bytes(dir.file("a/final.npz")));
  REQUIRE(fs::exists(dir.file("b/pruning.csv")));
  CHECK(csv_without(dir.file("b/pruning.csv"), kPruneTiming) ==
        csv_without(dir.file("a/pruning.csv"), kPruneTiming));
  REQUIRE(fs::exists(dir.file("b/log.csv")));
  CHECK(csv_without(dir.file("b/log.csv"), kLogTiming) ==
        csv_without(dir.file("a/log.csv"), kLogTiming));
}

// --prune-unit epoch, the unit every committed recipe uses: pruning step t
// happens at the start of epoch t (0-based), before its first optimizer step.
// Checked from what the run measured, not what it says it did: log.csv's
// sparsity after epoch e (1-based row) is the target of the last step t <= e-1,
// round(s_t·d)/d, and pruning.csv records each step at global step t·steps per
// epoch. Pruning one epoch early or late, or at the end of its epoch, fails.
TEST_CASE(
    "spruce-train gradual pruning, --prune-unit epoch: step t prunes at the start of epoch t") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  const int64_t epochs = 4, steps_per_epoch = 2, start = 0, end = 2;
  std::vector<std::string> args = train_args(dir, "a", "magnitude");
  const auto set = [&](const std::string& flag, const std::string& value) {
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == flag) args[i + 1] = value;
  };
  set("--epochs", std::to_string(epochs));
  set("--max-steps", std::to_string(steps_per_epoch));
  set("--prune-unit", "epoch");
  set("--prune-start", std::to_string(start));
  set("--prune-end", std::to_string(end));
  set("--prune-every", "1");
  expect_success(run(kTrain, args));
  const int64_t d = check_masks(io::read_npz(dir.file("a/final.npz")), "", "", "final.npz").size();
  // s_t for the epoch schedule (0.2 -> 0.8 over epochs 0..2).
  const auto target = [&](int64_t t) {
    const double progress = static_cast<double>(t - start) / static_cast<double>(end - start);
    return kFinal + (kInitial - kFinal) * std::pow(1.0 - progress, 3);
  };
  const auto exact_sparsity = [&](double s) {
    return static_cast<double>(expected_count(s, d)) / static_cast<double>(d);
  };

  const auto log_rows = csv_without(dir.file("a/log.csv"), kLogTiming);
  REQUIRE(log_rows.size() == static_cast<size_t>(epochs + 1));
  REQUIRE(log_rows[0][0] == "epoch");
  REQUIRE(log_rows[0].back() == "sparsity");
  for (int64_t e = 1; e <= epochs; ++e) {
    CAPTURE(e);
    CHECK(log_rows[static_cast<size_t>(e)][0] == std::to_string(e));
    const double expected = exact_sparsity(target(std::min(e - 1, end)));
    CHECK(std::abs(std::strtod(log_rows[static_cast<size_t>(e)].back().c_str(), nullptr) -
                   expected) <= 6e-7);
  }

  const auto prune_rows = csv_without(dir.file("a/pruning.csv"), kPruneTiming);
  REQUIRE(prune_rows.size() == static_cast<size_t>(end - start + 2));
  for (int64_t t = start; t <= end; ++t) {
    CAPTURE(t);
    const auto& row = prune_rows[static_cast<size_t>(t - start + 1)];
    CHECK(row[0] == "epoch");
    CHECK(row[1] == std::to_string(t));
    CHECK(row[2] == std::to_string(t));
    CHECK(row[3] == std::to_string(t * steps_per_epoch));  // before the epoch's first step
  }
}
