// A full or failing disk at every file the tools write (README, "Reliability
// guarantees"): ENOSPC or EIO while writing a checkpoint, final.npz, a log
// or a results file is a one-line error naming the file, exit status 1; no
// temporary file is left; the previous checkpoint is intact, and resuming
// from it ends byte-identical to a run that never failed.
//
// The failures are exact: the LD_PRELOAD shim (fault_shim.cpp) makes the
// chosen file's fwrite return short with ENOSPC or EIO, or its fsync fail.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

// Files of `dir` whose name holds ".tmp." (io::AtomicFile's temporaries).
std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> found;
  if (!fs::is_directory(dir)) return found;
  for (const auto& e : fs::directory_iterator(dir))
    if (contains(e.path().filename().string(), ".tmp.")) found.push_back(e.path().string());
  return found;
}

// The error a failed write must end with: one line on stderr naming `path`.
void expect_write_error(const RunResult& r, const std::string& program, const std::string& path,
                        const std::string& reason) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == 1);
  const std::vector<std::string> err = lines(r.err);
  REQUIRE(!err.empty());
  int errors = 0;
  for (const std::string& line : err) errors += contains(line, "error");
  CHECK(errors == 1);
  CHECK(starts_with(err.back(), program + ": error: cannot write '" + path + "'"));
  CHECK(contains(err.back(), reason));
}

struct Failure {
  std::string file;   // the file whose write fails
  int at;             // its n-th write
  std::string in;     // write or fsync
  std::string error;  // ENOSPC or EIO
};

std::string reason_of(const Failure& f) {
  return f.error == "EIO" ? "Input/output error" : "No space left on device";
}

}  // namespace

TEST_CASE("spruce-train: a full disk at any file it writes keeps the last checkpoint, resumable") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, tiny_train_args(dir, "ref", {"--checkpoint-every", "2"})));
  const std::vector<uint8_t> reference = read_bytes(dir.file("ref/final.npz"));

  // Checkpoints: 1 after step 2, 2 end of epoch 1, 3 after global step 4, 4
  // end of epoch 2. Logs are written after each epoch-end checkpoint.
  struct Case {
    Failure failure;
    const char* kept_epoch;  // what last.ckpt records afterwards ("" = none)
    const char* kept_batch;
  };
  for (const Case& c : {
           Case{{"last.ckpt", 1, "write", "ENOSPC"}, "", ""},
           Case{{"last.ckpt", 2, "write", "ENOSPC"}, "0", "2"},
           Case{{"last.ckpt", 3, "fsync", "EIO"}, "1", "0"},
           Case{{"last.ckpt", 4, "write", "EIO"}, "1", "1"},
           Case{{"log.csv", 1, "write", "ENOSPC"}, "1", "0"},
           Case{{"log.jsonl", 2, "fsync", "ENOSPC"}, "2", "0"},
           Case{{"final.npz", 1, "write", "ENOSPC"}, "2", "0"},
       }) {
    const Failure& f = c.failure;
    CAPTURE(f.file);
    CAPTURE(f.at);
    const std::string out = "fail-" + f.file + "-" + std::to_string(f.at);
    const RunResult r = run(kTrain, tiny_train_args(dir, out, {"--checkpoint-every", "2"}),
                            fail_write(f.file, f.at, f.in, f.error, 100));
    expect_write_error(r, "spruce-train", dir.file(out + "/" + f.file), reason_of(f));
    CHECK(temporaries(dir.file(out)).empty());
    CHECK_FALSE(fs::exists(dir.file(out + "/final.npz")));
    if (std::string(c.kept_epoch).empty()) {
      // Failed before its first checkpoint: the run folder it created is gone.
      CHECK_FALSE(fs::exists(dir.file(out)));
      continue;
    }
    const io::Checkpoint kept = io::load_checkpoint(dir.file(out + "/last.ckpt"));
    CHECK(kept.meta_value("train.epoch") == c.kept_epoch);
    CHECK(kept.meta_value("train.batch") == c.kept_batch);
    expect_success(run(kTrain, {"--resume", dir.file(out)}));
    CHECK(read_bytes(dir.file(out + "/final.npz")) == reference);
  }
}

TEST_CASE("spruce-train: pruning.csv on a full disk") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  const std::vector<std::string> prune{"--prune-method", "magnitude", "--prune-start",    "0",
                                       "--prune-end",    "1",         "--final-sparsity", "0.5"};
  expect_success(run(kTrain, tiny_train_args(dir, "ref", prune)));
  const RunResult r = run(kTrain, tiny_train_args(dir, "fail", prune),
                          fail_write("pruning.csv", 1, "write", "ENOSPC", 10));
  expect_write_error(r, "spruce-train", dir.file("fail/pruning.csv"), "No space left on device");
  CHECK(temporaries(dir.file("fail")).empty());
  expect_success(run(kTrain, {"--resume", dir.file("fail")}));
  CHECK(read_bytes(dir.file("fail/final.npz")) == read_bytes(dir.file("ref/final.npz")));
  CHECK(read_text(dir.file("fail/pruning.csv")) == read_text(dir.file("ref/pruning.csv")));
}

TEST_CASE("spruce-prune and spruce-compare: a full disk at each output file") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, tiny_train_args(dir, "model", {"--epochs", "1"})));
  const std::vector<std::string> common{"--checkpoint", dir.file("model/last.ckpt"),
                                        "--data",       "mnist",
                                        "--data-dir",   dir.file("data"),
                                        "--eval-limit", "32",
                                        "--threads",    "1"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  const std::vector<std::string> prune =
      with({"--method", "magnitude", "--sparsity", "0.5", "--out", dir.file("p/pruned.ckpt"),
            "--npz", dir.file("p/pruned.npz"), "--json", dir.file("p/report.json")});
  fs::create_directories(dir.file("p"));
  for (const Failure& f :
       {Failure{"pruned.ckpt", 1, "write", "ENOSPC"}, Failure{"pruned.npz", 1, "fsync", "EIO"},
        Failure{"report.json", 1, "write", "ENOSPC"}}) {
    CAPTURE(f.file);
    const RunResult r = run(kPrune, prune, fail_write(f.file, f.at, f.in, f.error, 50));
    expect_write_error(r, "spruce-prune", dir.file("p/" + f.file), reason_of(f));
    CHECK(temporaries(dir.file("p")).empty());
    CHECK_FALSE(fs::exists(dir.file("p/" + f.file)));
  }
  const std::vector<std::string> compare =
      with({"--methods", "magnitude", "--sparsities", "0.5", "--out", dir.file("c")});
  for (const Failure& f :
       {Failure{"results.csv", 1, "write", "ENOSPC"}, Failure{"results.json", 1, "fsync", "EIO"},
        Failure{"accuracy.svg", 1, "write", "ENOSPC"}}) {
    CAPTURE(f.file);
    const RunResult r = run(kCompare, compare, fail_write(f.file, f.at, f.in, f.error, 50));
    expect_write_error(r, "spruce-compare", dir.file("c/" + f.file), reason_of(f));
    CHECK(temporaries(dir.file("c")).empty());
    CHECK_FALSE(fs::exists(dir.file("c/" + f.file)));
  }
}
