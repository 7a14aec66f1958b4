// Ctrl-C and SIGTERM (README, "Reliability guarantees"), end to end with the
// built tools: the first signal lets the tool finish what it is doing and
// save atomically, then exit with 130 (SIGINT) or 143 (SIGTERM) and one line
// saying what was kept; a second signal ends it at once, leaving the
// previous files intact and no temporary behind.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/io/snapshots.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

int exit_status_of(int signal) { return 128 + signal; }

}  // namespace

TEST_CASE("spruce-prune: a signal stops it before it writes; a second one at once") {
  TempDir dir;
  // 4,000 test images: the evaluation before pruning then takes long enough
  // (a tenth of a second or more) for the second signal, 5 ms after the
  // first, to arrive before the tool reaches its next stop point.
  write_mnist(dir.path() / "data", 96, 4000);
  expect_success(run(kTrain, tiny_train_args(dir, "model", {"--epochs", "1"})));
  fs::create_directories(dir.file("p"));
  const std::vector<std::string> prune{"--checkpoint",
                                       dir.file("model/last.ckpt"),
                                       "--data",
                                       "mnist",
                                       "--data-dir",
                                       dir.file("data"),
                                       "--method",
                                       "woodfisher",
                                       "--sparsity",
                                       "0.5",
                                       "--fisher-samples",
                                       "64",
                                       "--threads",
                                       "1",
                                       "--out",
                                       dir.file("p/pruned.ckpt"),
                                       "--npz",
                                       dir.file("p/pruned.npz")};
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    const RunResult r = run(kPrune, prune, {}, send_signal(sig, "model "));
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == exit_status_of(sig));
    const std::vector<std::string> err = lines(r.err);
    REQUIRE(!err.empty());
    CHECK(err.back() == "spruce-prune: stopped by " +
                            std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") + " before writing " +
                            dir.file("p/pruned.ckpt") + "; nothing written");
    CHECK(files_in(dir.file("p")).empty());
  }
  const RunResult twice = run(kPrune, prune, {}, send_signal(SIGINT, "model ", 0, 2, 5));
  INFO("exit code " << twice.exit_code << ", stderr: " << twice.err);
  if (twice.signal == 0) {
    // On a busy machine the test's 5 ms pause can outlast the evaluation:
    // the tool then stopped on the first signal, before the second was sent.
    MESSAGE("the tool stopped before the second signal was sent");
    CHECK(twice.exit_code == 130);
  } else {
    CHECK(twice.signal == SIGINT);
  }
  CHECK(files_in(dir.file("p")).empty());
}

TEST_CASE("spruce-compare: a signal keeps the results done so far") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, tiny_train_args(dir, "model", {"--epochs", "1"})));
  std::string sparsities;
  for (int i = 1; i <= 19; ++i) {
    if (i > 1) sparsities += ",";
    sparsities += std::to_string(i * 0.05);
  }
  const std::vector<std::string> compare{"--checkpoint", dir.file("model/last.ckpt"),
                                         "--data",       "mnist",
                                         "--data-dir",   dir.file("data"),
                                         "--methods",    "magnitude,magnitude-layer",
                                         "--sparsities", sparsities,
                                         "--eval-limit", "32",
                                         "--threads",    "1",
                                         "--out",        dir.file("c")};
  // The first result row names its method: stop once it is printed.
  const RunResult r = run(kCompare, compare, {}, send_signal(SIGTERM, "\nmagnitude "));
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 143);
  const std::vector<std::string> rows = lines(read_text(dir.file("c/results.csv")));
  REQUIRE(rows.size() >= 2);        // the header and at least one result
  CHECK(rows.size() < 2 * 19 + 1);  // not all of them
  CHECK(contains(lines(r.err).back(),
                 "spruce-compare: stopped by SIGTERM after " + std::to_string(rows.size() - 1) +
                     " results; wrote them to " + dir.file("c") + "/results.csv and results.json"));
  CHECK(files_in(dir.file("c")) == std::vector<std::string>{"results.csv", "results.json"});
}

namespace {

// Gradual WoodFisher pruning at every step from global step 1 to 4, so that
// a signal often lands in a pruning step (Fisher collection, inverse, update).
std::vector<std::string> pruning_run(const TempDir& dir, const std::string& out,
                                     const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a = tiny_train_args(
      dir, out,
      {"--prune-method",     "woodfisher", "--prune-unit",       "step", "--prune-start",    "1",
       "--prune-end",        "4",          "--initial-sparsity", "0.2",  "--final-sparsity", "0.8",
       "--fisher-samples",   "32",         "--fisher-batch",     "1",    "--block-size",     "32",
       "--prune-eval-limit", "32",         "--checkpoint-every", "2"});
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// After a stopped run: what it printed, what it left, and that --resume
// completes it byte-identical to `reference`.
void expect_stopped_then_resumed(const TempDir& dir, const std::string& out, const RunResult& r,
                                 int sig, const std::vector<uint8_t>& reference,
                                 const std::vector<std::string>& reference_log) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  const bool ended_while_exiting = r.signal != 0;
  if (ended_while_exiting) {
    // The handler lives as long as the run; a signal that comes after it, while
    // the finished process exits, ends the process: every file is complete
    // (the lock file may stay, as after any kill; the next run ignores it).
    REQUIRE(r.signal == sig);
    REQUIRE(contains(r.out, "\ndone: "));
    MESSAGE("the run finished, then the signal ended the exiting process");
  } else if (r.exit_code == 0) {
    MESSAGE("the run finished before the signal arrived");
  } else {
    CHECK(r.exit_code == 128 + sig);
    const std::vector<std::string> err = lines(r.err);
    REQUIRE(!err.empty());
    CHECK(starts_with(err.back(), std::string("spruce-train: stopped by ") +
                                      (sig == SIGINT ? "SIGINT" : "SIGTERM")));
    if (contains(err.back(), "before training started")) {
      CHECK_FALSE(fs::exists(dir.file(out)));
      expect_success(run(kTrain, pruning_run(dir, out)));
    } else {
      CHECK(contains(err.back(), "saved in " + dir.file(out + "/last.ckpt") +
                                     "; continue with: spruce-train --resume " + dir.file(out)));
      CHECK_FALSE(fs::exists(dir.file(out + "/final.npz")));
      expect_success(run(kTrain, {"--resume", dir.file(out)}));
    }
  }
  for (const std::string& name : files_in(dir.file(out))) {
    CHECK_FALSE(contains(name, ".tmp."));
    if (!ended_while_exiting) CHECK(name != ".lock");
  }
  CHECK(read_bytes(dir.file(out + "/final.npz")) == reference);
  CHECK(csv_without_timing(dir.file(out + "/log.csv")) == reference_log);
}

}  // namespace

TEST_CASE(
    "spruce-train: SIGINT or SIGTERM at any moment, then --resume, ends byte-identical; a second "
    "signal quits at once") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, pruning_run(dir, "ref")));
  const std::vector<uint8_t> reference = read_bytes(dir.file("ref/final.npz"));
  const std::vector<std::string> reference_log = csv_without_timing(dir.file("ref/log.csv"));
  // Moments after the run starts training ("run " is printed just before):
  // before the first step and checkpoint, then spread over the run, whose
  // pruning steps take most of its time.
  int i = 0;
  for (int delay_ms : {0, 60, 250, 700}) {
    const int sig = i++ % 2 ? SIGTERM : SIGINT;
    CAPTURE(delay_ms);
    CAPTURE(sig);
    const std::string out = "at" + std::to_string(delay_ms);
    const RunResult r =
        run(kTrain, pruning_run(dir, out), {}, send_signal(sig, "\nrun ", delay_ms));
    expect_stopped_then_resumed(dir, out, r, sig, reference, reference_log);
  }
  // While a checkpoint is being written (checkpoint 2 is the end of epoch 1,
  // 3 the mid-epoch one after global step 4): it is completed, then kept.
  for (const auto& [n, sig] : {std::pair{2, SIGINT}, std::pair{3, SIGTERM}}) {
    CAPTURE(n);
    const std::string out = "ckpt" + std::to_string(n);
    const RunResult r =
        run(kTrain, pruning_run(dir, out), signal_at_checkpoint(n, sig == SIGINT ? "INT" : "TERM"));
    CHECK(r.exit_code == 128 + sig);
    expect_stopped_then_resumed(dir, out, r, sig, reference, reference_log);
  }
  // A second Ctrl-C quits at once, the previous checkpoint intact.
  // Both signals while checkpoint 3 (epoch 2, after global step 4) is being
  // saved: it is abandoned, checkpoint 2 (the end of epoch 1) stays.
  const RunResult r = run(kTrain, pruning_run(dir, "b"), signal_at_checkpoint(3, "INT", 2));
  CHECK(r.signal == SIGINT);
  const io::Checkpoint kept = io::load_checkpoint(dir.file("b/last.ckpt"));
  CHECK(kept.meta_value("train.epoch") == "1");
  CHECK(kept.meta_value("train.batch") == "0");
  for (const std::string& name : files_in(dir.file("b"))) CHECK_FALSE(contains(name, ".tmp."));
  expect_success(run(kTrain, {"--resume", dir.file("b")}));
  CHECK(read_bytes(dir.file("b/final.npz")) == reference);
}

TEST_CASE("spruce-train: one run per folder; a live one is named by PID, a dead one ignored") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // A long run holds "live"; while it trains, a second run on that folder,
  // with or without --resume, is refused with the holder's PID.
  std::vector<RunResult> refused;
  pid_t holder = 0;
  const RunResult live = run(kTrain, tiny_train_args(dir, "live", {"--epochs", "1000"}), {},
                             [&](pid_t pid, const std::string& stdout_path) {
                               holder = pid;
                               while (!contains(read_text(stdout_path), "\nrun ")) ::usleep(1000);
                               refused.push_back(run(kTrain, tiny_train_args(dir, "live")));
                               refused.push_back(run(kTrain, {"--resume", dir.file("live")}));
                               ::kill(pid, SIGINT);
                             });
  CHECK(live.exit_code == 130);
  for (const RunResult& r : refused) {
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err == "spruce-train: error: " + dir.file("live") + " is in use by spruce-train (PID " +
                       std::to_string(holder) + ", holding " + dir.file("live/.lock") +
                       "); wait for it to finish or stop it, or choose another --out\n");
  }
  // A run killed outright leaves its lock file; the kernel released the lock.
  const RunResult killed =
      run(kTrain, tiny_train_args(dir, "dead"), kill_at_checkpoint(1, "after"));
  REQUIRE(killed.signal == SIGKILL);
  CHECK(fs::exists(dir.file("dead/.lock")));
  expect_success(run(kTrain, {"--resume", dir.file("dead")}));
  CHECK_FALSE(fs::exists(dir.file("dead/.lock")));
}

TEST_CASE("spruce-train --keep-checkpoints N keeps the last N epoch-end checkpoints") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(
      run(kTrain, tiny_train_args(dir, "k", {"--epochs", "4", "--keep-checkpoints", "2"})));
  CHECK(files_in(dir.file("k")) == std::vector<std::string>{"epoch-3.ckpt", "epoch-4.ckpt",
                                                            "final.npz", "last.ckpt", "log.csv",
                                                            "log.jsonl"});
  CHECK(read_bytes(dir.file("k/epoch-4.ckpt")) == read_bytes(dir.file("k/last.ckpt")));
  const io::Checkpoint third = io::load_checkpoint(dir.file("k/epoch-3.ckpt"));
  CHECK(third.meta_value("train.epoch") == "3");
  // A full disk while snapshotting epoch 2: an error naming it, last.ckpt
  // (epoch 2) and epoch-1.ckpt kept; the resumed run ends as the first one.
  const RunResult r =
      run(kTrain, tiny_train_args(dir, "f", {"--epochs", "4", "--keep-checkpoints", "1"}),
          fail_write("epoch-2.ckpt", 1, "write", "ENOSPC"));
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "cannot write '" + dir.file("f/epoch-2.ckpt") + "'"));
  CHECK(io::load_checkpoint(dir.file("f/last.ckpt")).meta_value("train.epoch") == "2");
  CHECK(io::list_snapshots(dir.file("f")) == std::vector<int64_t>{1});
  expect_success(run(kTrain, {"--resume", dir.file("f")}));
  CHECK(read_bytes(dir.file("f/final.npz")) == read_bytes(dir.file("k/final.npz")));
  CHECK(io::list_snapshots(dir.file("f")) == std::vector<int64_t>{4});
}
