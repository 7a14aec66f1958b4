// spruce-train resumes bit-exactly: a run killed with SIGKILL right after a
// mid-epoch checkpoint, right after an epoch-end checkpoint, or while writing
// a checkpoint, then continued with --resume, ends with a final.npz identical
// byte for byte to the run that was never interrupted, and with the same
// log.csv apart from the timing columns. So does a run stopped after one
// epoch and extended with --resume --epochs 2.
//
// Each run is tiny (96 random 28x28 images, 3 steps of 16 per epoch, one
// thread), and the kills are exact: an LD_PRELOAD shim (fault_shim.cpp)
// raises SIGKILL at the N-th checkpoint rename, so no timing is involved.
#include <doctest/doctest.h>
#include <signal.h>

#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

// The settings every run shares; `extra` adds or overrides flags.
std::vector<std::string> train_args(const TempDir& dir, const std::string& out,
                                    const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{"--data",       "mnist",      "--data-dir",  dir.file("data"),
                             "--model",      "resnet20",   "--epochs",    "2",
                             "--batch-size", "16",         "--max-steps", "3",
                             "--eval-limit", "32",         "--threads",   "1",
                             "--out",        dir.file(out)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

}  // namespace

TEST_CASE("spruce-train: a run killed at a checkpoint resumes bit-exactly") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // The reference: two epochs in one go, checkpoints at epoch ends only.
  expect_success(run(kTrain, train_args(dir, "ref")));
  const std::vector<uint8_t> reference = read_bytes(dir.file("ref/final.npz"));
  const std::vector<std::string> reference_log = csv_without_timing(dir.file("ref/log.csv"));
  REQUIRE(reference_log.size() == 3);

  // With --checkpoint-every 2 and 3 steps per epoch the checkpoints are:
  // 1 epoch 1 after step 2, 2 end of epoch 1, 3 epoch 2 after step 1 (global
  // step 4), 4 end of epoch 2.
  struct Crash {
    int checkpoint;
    const char* when;
    const char* saved_epoch;  // what the surviving last.ckpt records
    const char* saved_batch;
  };
  for (const Crash& c :
       {Crash{1, "after", "0", "2"}, Crash{2, "after", "1", "0"}, Crash{4, "before", "1", "1"}}) {
    CAPTURE(c.checkpoint);
    CAPTURE(std::string(c.when));
    const std::string out = "crash" + std::to_string(c.checkpoint);
    const RunResult killed = run(kTrain, train_args(dir, out, {"--checkpoint-every", "2"}),
                                 kill_at_checkpoint(c.checkpoint, c.when));
    INFO("stderr of the killed run: " << killed.err);
    REQUIRE(killed.signal == SIGKILL);
    CHECK_FALSE(fs::exists(dir.file(out + "/final.npz")));
    if (std::string(c.when) == "before") {
      // The premise: the kill came while saving, after the new checkpoint was
      // fully written to its temporary file.
      bool temp_found = false;
      for (const auto& e : fs::directory_iterator(dir.file(out)))
        temp_found = temp_found || starts_with(e.path().filename().string(), "last.ckpt.tmp.");
      CHECK(temp_found);
    }
    const io::Checkpoint saved = io::load_checkpoint(dir.file(out + "/last.ckpt"));
    CHECK(saved.meta_value("train.epoch") == c.saved_epoch);
    CHECK(saved.meta_value("train.batch") == c.saved_batch);

    const RunResult resumed = run(kTrain, {"--resume", dir.file(out)});
    expect_success(resumed);
    CHECK(read_bytes(dir.file(out + "/final.npz")) == reference);
    CHECK(csv_without_timing(dir.file(out + "/log.csv")) == reference_log);
  }
}

TEST_CASE("spruce-train: --epochs 1 then --resume --epochs 2 equals two epochs in one go") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // A schedule that does not depend on the total number of epochs (onecycle
  // and cosine do, so extending such a run changes its first epoch's rates).
  const std::vector<std::string> step{"--schedule", "step", "--step-epochs", "1", "--gamma", "0.5"};
  expect_success(run(kTrain, train_args(dir, "ref", step)));

  std::vector<std::string> first = step;
  first.insert(first.end(), {"--epochs", "1"});
  expect_success(run(kTrain, train_args(dir, "ext", first)));
  CHECK(csv_without_timing(dir.file("ext/log.csv")).size() == 2);
  expect_success(run(kTrain, {"--resume", dir.file("ext"), "--epochs", "2"}));

  CHECK(read_bytes(dir.file("ext/final.npz")) == read_bytes(dir.file("ref/final.npz")));
  CHECK(csv_without_timing(dir.file("ext/log.csv")) == csv_without_timing(dir.file("ref/log.csv")));
}
