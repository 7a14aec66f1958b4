// spruce-train's failures, seen from outside: a loss that turns NaN/Inf stops
// the run with exit status 1 and one line naming the step ("nan"/"inf"),
// leaving the last checkpoint byte for byte as it was and still loadable by
// spruce-eval, or no run directory when none was written yet; an existing
// run directory without --resume/--overwrite, unknown flags, bad values, bad
// recipe settings, --init of another model and --resume with settings that
// would change the run exit with status 2 and one "spruce-train: error:"
// line, creating nothing; data errors (missing files, truncated IDX files,
// plain or gzip) exit with status 1, name the file (and for Fashion-MNIST the
// Debian package that provides it) and leave no run directory behind.
#include <doctest/doctest.h>

#include <limits>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "models/registry.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

std::vector<std::string> train_args(const TempDir& dir, const std::string& out,
                                    const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{"--data",       "mnist",      "--data-dir",  dir.file("data"),
                             "--model",      "resnet20",   "--epochs",    "1",
                             "--batch-size", "16",         "--max-steps", "3",
                             "--eval-limit", "32",         "--threads",   "1",
                             "--out",        dir.file(out)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The lines of stderr that report an error: exactly one is expected.
std::vector<std::string> error_lines(const RunResult& r) {
  std::vector<std::string> out;
  for (const std::string& line : lines(r.err))
    if (contains(line, "error")) out.push_back(line);
  return out;
}

// A usage error: status 2, nothing on stdout, and stderr exactly one line
// "spruce-train: error: ..." containing every one of `parts`.
void expect_usage_error(const RunResult& r, const std::vector<std::string>& parts) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  const std::vector<std::string> err = lines(r.err);
  REQUIRE(err.size() == 1);
  CHECK(starts_with(err[0], "spruce-train: error: "));
  for (const std::string& p : parts) CHECK_MESSAGE(contains(err[0], p), "missing: " << p);
}

// A failure at run time: status 1 and the last stderr line is the only error
// line, "spruce-train: error: ..." containing every one of `parts`.
void expect_failure(const RunResult& r, const std::vector<std::string>& parts) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == 1);
  const std::vector<std::string> err = error_lines(r);
  REQUIRE(err.size() == 1);
  CHECK(err[0] == lines(r.err).back());
  CHECK(starts_with(err[0], "spruce-train: error: "));
  for (const std::string& p : parts) CHECK_MESSAGE(contains(err[0], p), "missing: " << p);
}

}  // namespace

TEST_CASE("spruce-train: a NaN/Inf loss stops with status 1 and keeps the last checkpoint") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // A constant schedule, so the run may be extended with --resume --epochs 2.
  const RunResult first = run(kTrain, train_args(dir, "run", {"--schedule", "constant"}));
  INFO("stderr of the first epoch: " << first.err);
  REQUIRE(first.exit_code == 0);
  const std::string ckpt = dir.file("run/last.ckpt");
  fs::remove(dir.file("run/final.npz"));

  // Infinite momentum buffers: the first resumed step still sees the good
  // weights (a finite loss), its update makes them infinite, so the loss of
  // the second step is NaN whatever the data.
  io::Checkpoint poisoned = io::load_checkpoint(ckpt);
  int buffers = 0;
  for (auto& [name, t] : poisoned.tensors)
    if (starts_with(name, "optim/")) {
      for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::numeric_limits<float>::infinity();
      ++buffers;
    }
  REQUIRE(buffers > 0);
  io::save_checkpoint(ckpt, poisoned);
  const std::vector<uint8_t> before = read_bytes(ckpt);

  const RunResult blown = run(kTrain, {"--resume", dir.file("run"), "--epochs", "2"});
  expect_failure(blown, {"spruce-train: error: loss is ", " at epoch 2 step 2 (global step 5)",
                         "the last good checkpoint " + ckpt + " is kept"});
  const std::string line = error_lines(blown).front();
  // "nan" or "inf" as a word, never printf's "-nan".
  CHECK((contains(line, "loss is nan at") || contains(line, "loss is inf at")));
  CHECK_FALSE(contains(line, "-nan"));
  CHECK(read_bytes(ckpt) == before);
  CHECK_FALSE(fs::exists(dir.file("run/final.npz")));

  const RunResult eval = run(kEval, {"--checkpoint", ckpt, "--data", "mnist", "--data-dir",
                                     dir.file("data"), "--threads", "1"});
  INFO("spruce-eval stderr: " << eval.err);
  CHECK(eval.exit_code == 0);
  CHECK(contains(eval.out, "top-1"));
}

TEST_CASE("spruce-train: a NaN loss before the first checkpoint leaves no run directory") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // 1e300 overflows float: the first step makes the weights infinite.
  const RunResult blown =
      run(kTrain, train_args(dir, "run", {"--schedule", "constant", "--lr", "1e300"}));
  expect_failure(blown, {" at epoch 1 step 2 (global step 2); stopped, before the first "
                         "checkpoint, so nothing is written"});
  const std::string line = error_lines(blown).front();
  CHECK((contains(line, "loss is nan at") || contains(line, "loss is inf at")));
  CHECK_FALSE(fs::exists(dir.file("run")));
}

TEST_CASE("spruce-train: an existing run directory needs --resume or --overwrite") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  REQUIRE(run(kTrain, train_args(dir, "run")).exit_code == 0);
  const std::vector<uint8_t> ckpt = read_bytes(dir.file("run/last.ckpt"));
  const std::string log = read_text(dir.file("run/log.csv"));

  expect_usage_error(run(kTrain, train_args(dir, "run")),
                     {dir.file("run"), "--resume", "--overwrite"});
  CHECK(read_bytes(dir.file("run/last.ckpt")) == ckpt);
  CHECK(read_text(dir.file("run/log.csv")) == log);

  const RunResult again = run(kTrain, train_args(dir, "run", {"--overwrite"}));
  INFO("stderr: " << again.err);
  CHECK(again.exit_code == 0);
}

TEST_CASE("spruce-train: unknown flags and bad values are usage errors (status 2, one line)") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  std::vector<std::string> model_names;
  for (const std::string& m : models::model_names()) model_names.push_back(m);
  model_names.push_back("nope");

  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases{
      {{"--bogus"}, {"--bogus"}},
      {{"--lr", "-1"}, {"--lr", "-1"}},
      {{"--lr", "abc"}, {"--lr", "abc"}},
      {{"--epochs", "0"}, {"--epochs", "0"}},
      {{"--batch-size", "0"}, {"--batch-size"}},
      {{"--model", "nope"}, model_names},
      {{"--data", "imagenet"},
       {"--data", "imagenet", "fashion-mnist", "mnist", "cifar10", "folder"}},
      {{"--batch-size"}, {"--batch-size"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args.front());
    std::vector<std::string> args = train_args(dir, "run");
    args.insert(args.end(), c.args.begin(), c.args.end());
    expect_usage_error(run(kTrain, args), c.message);
    CHECK_FALSE(fs::exists(dir.file("run")));
  }
}

TEST_CASE("spruce-train: data errors name the file (status 1) and create no run directory") {
  TempDir dir;
  fs::create_directories(dir.path() / "empty");
  // Every subcase fails on its data: the run directory must not appear.
  struct NoRunDir {
    const TempDir& dir;
    ~NoRunDir() { CHECK_FALSE(fs::exists(dir.file("run"))); }
  } no_run_dir{dir};

  SUBCASE("mnist files missing") {
    expect_failure(run(kTrain, train_args(dir, "run", {"--data-dir", dir.file("empty")})),
                   {dir.file("empty/train-images-idx3-ubyte"), "--data-dir"});
  }
  SUBCASE("fashion-mnist files missing: the Debian package is named") {
    expect_failure(
        run(kTrain,
            train_args(dir, "run", {"--data", "fashion-mnist", "--data-dir", dir.file("empty")})),
        {dir.file("empty/train-images-idx3-ubyte"), "dataset-fashion-mnist"});
  }
  SUBCASE("truncated IDX image file") {
    write_mnist(dir.path() / "data");
    const std::string images = dir.file("data/train-images-idx3-ubyte");
    std::vector<uint8_t> bytes = read_bytes(images);
    bytes.resize(bytes.size() - 100);
    write_bytes(images, bytes);
    expect_failure(run(kTrain, train_args(dir, "run")), {images + ": ", "bytes"});
  }
  SUBCASE("truncated gzip IDX label file") {
    write_mnist(dir.path() / "data");
    const std::string labels = dir.file("data/train-labels-idx1-ubyte");
    std::vector<uint8_t> gz = gzip(read_bytes(labels));
    gz.resize(gz.size() / 2);
    fs::remove(labels);
    write_bytes(labels + ".gz", gz);
    expect_failure(run(kTrain, train_args(dir, "run")), {labels + ".gz: ", "truncated"});
  }
  SUBCASE("nested --out: no parent directory is left either") {
    expect_failure(run(kTrain, train_args(dir, "a/b/run", {"--data-dir", dir.file("empty")})),
                   {dir.file("empty/train-images-idx3-ubyte")});
    CHECK_FALSE(fs::exists(dir.file("a")));
  }
  SUBCASE("an --out directory that existed before is kept, with its content") {
    fs::create_directories(dir.path() / "mine");
    write_bytes(dir.file("mine/notes.txt"), {'h', 'i'});
    fs::create_directories(dir.path() / "mine-empty");
    for (const char* out : {"mine", "mine-empty"}) {
      expect_failure(run(kTrain, train_args(dir, out, {"--data-dir", dir.file("empty")})),
                     {dir.file("empty/train-images-idx3-ubyte")});
      CHECK(fs::is_directory(dir.file(out)));
    }
    CHECK(read_text(dir.file("mine/notes.txt")) == "hi");
  }
}

TEST_CASE("spruce-train: --init with a checkpoint of another model is a usage error") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  REQUIRE(run(kTrain, train_args(dir, "r20")).exit_code == 0);
  const std::string ckpt = dir.file("r20/last.ckpt");
  expect_usage_error(run(kTrain, train_args(dir, "run", {"--init", ckpt, "--model", "resnet32"})),
                     {"--init " + ckpt, "holds a resnet20, not a resnet32"});
  CHECK_FALSE(fs::exists(dir.file("run")));
}

TEST_CASE("spruce-train: recipe errors are one line naming the file and the key (status 2)") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  struct Case {
    const char* what;
    std::string yaml;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases{
      {"unknown key", "epochs: 1\nlearning-rate: 0.1\n", {"unknown setting 'learning-rate'"}},
      // (keys that train_args does not give: the command line overrides a recipe)
      {"wrong type", "crop-padding: two\n", {"--crop-padding: expected an integer, got 'two'"}},
      {"a list for a number", "lr: [0.1, 0.2]\n", {"--lr: expected a number, got '0.1,0.2'"}},
      {"out of range", "momentum: 1.5\n", {"--momentum: 1.5 is out of range"}},
      {"unknown choice", "schedule: linear\n", {"--schedule: unknown value 'linear'"}},
      {"a nested mapping", "lr:\n  peak: 0.1\n", {"line 1: 'lr'", "found a mapping"}},
      {"no value", "epochs:\n", {"line 1: 'epochs'", "has no value"}},
      {"not YAML", "epochs: [1, 2\n", {"line "}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string recipe = dir.file("recipe.yaml");
    write_bytes(recipe, {c.yaml.begin(), c.yaml.end()});
    std::vector<std::string> parts{recipe + ": "};
    parts.insert(parts.end(), c.message.begin(), c.message.end());
    const RunResult r = run(kTrain, train_args(dir, "run", {"--recipe", recipe}));
    if (std::string(c.what) == "not YAML" || std::string(c.what) == "a nested mapping" ||
        std::string(c.what) == "no value")
      expect_failure(r, parts);  // the file is malformed: a FormatError, status 1
    else
      expect_usage_error(r, parts);
    CHECK_FALSE(fs::exists(dir.file("run")));
  }
}

TEST_CASE(
    "spruce-train: --resume refuses settings that would change the run, warns for --threads") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  REQUIRE(run(kTrain, train_args(dir, "run")).exit_code == 0);  // onecycle, 1 epoch
  const std::string ckpt = dir.file("run/last.ckpt");
  const std::vector<uint8_t> saved = read_bytes(ckpt);
  const std::vector<uint8_t> npz = read_bytes(dir.file("run/final.npz"));

  struct Case {
    std::vector<std::string> flags;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases{
      {{"--epochs", "2"}, {"--epochs 2 differs from the run's 1 (saved in " + ckpt, "onecycle"}},
      {{"--epochs", "2", "--schedule", "cosine"},
       {"--schedule cosine differs from the run's onecycle"}},
      {{"--batch-size", "8"}, {"--batch-size 8 differs from the run's 16"}},
      {{"--max-steps", "2"}, {"--max-steps 2 differs from the run's 3"}},
      {{"--train-limit", "50"}, {"--train-limit 50 differs from the run's 0"}},
      {{"--lr", "0.05"}, {"--lr 0.05 differs from the run's 0.1", "--init " + ckpt}},
      {{"--seed", "1"}, {"--seed 1 differs from the run's 0"}},
      {{"--model", "resnet32"}, {"--model resnet32 differs from the run's resnet20"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.flags.front());
    std::vector<std::string> args{"--resume", dir.file("run")};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    expect_usage_error(run(kTrain, args), c.message);
    CHECK(read_bytes(ckpt) == saved);
  }
  // A recipe's settings count as given: one that differs is refused, naming
  // the recipe and the key; an --init (read only when a run starts) is not.
  const std::string recipe = dir.file("resume.yaml");
  const std::string yaml = "lr: 0.05\ninit: " + dir.file("no-such.ckpt") + "\n";
  write_bytes(recipe, {yaml.begin(), yaml.end()});
  expect_usage_error(run(kTrain, {"--resume", dir.file("run"), "--recipe", recipe}),
                     {"recipe " + recipe + ": lr 0.05 differs from the run's 0.1"});
  CHECK(read_bytes(ckpt) == saved);
  // The same values as saved are fine; so are --eval-limit and --threads
  // (with a warning: the bits may differ from a run that kept 1 thread),
  // and a recipe that repeats the run's settings with another --init.
  const std::string same_yaml = "lr: 0.1\nbatch-size: 16\ninit: " + dir.file("no-such.ckpt") + "\n";
  write_bytes(recipe, {same_yaml.begin(), same_yaml.end()});
  const RunResult same_recipe = run(kTrain, {"--resume", dir.file("run"), "--recipe", recipe});
  INFO("stderr: " << same_recipe.err);
  CHECK(same_recipe.exit_code == 0);
  CHECK(read_bytes(dir.file("run/final.npz")) == npz);
  const RunResult same = run(kTrain, {"--resume", dir.file("run"), "--epochs", "1", "--lr", "0.1",
                                      "--eval-limit", "16", "--threads", "2"});
  INFO("stderr: " << same.err);
  CHECK(same.exit_code == 0);
  CHECK(contains(same.err, "spruce-train: warning: --threads 2 differs from the run's 1"));
  CHECK(read_bytes(dir.file("run/final.npz")) == npz);
}
