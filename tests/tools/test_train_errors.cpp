// spruce-train's failures, seen from outside: a loss that turns NaN/Inf stops
// the run with exit status 1 and one line naming the step, leaving the last
// checkpoint byte for byte as it was and still loadable by spruce-eval; an
// existing run directory without --resume/--overwrite, unknown flags and bad
// values exit with status 2 and one "spruce-train: error:" line, creating
// nothing; data errors (missing files, truncated IDX files, plain or gzip)
// exit with status 1 and name the file (and for Fashion-MNIST the Debian
// package that provides it).
#include <doctest/doctest.h>
#include <zlib.h>

#include <string>
#include <vector>

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

std::vector<uint8_t> gzip(const std::vector<uint8_t>& bytes) {
  uLongf size = compressBound(static_cast<uLong>(bytes.size())) + 32;
  std::vector<uint8_t> out(size);
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
          Z_OK);  // +16: gzip wrapper
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

}  // namespace

TEST_CASE("spruce-train: a NaN/Inf loss stops with status 1 and keeps the last checkpoint") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  const RunResult first = run(kTrain, train_args(dir, "run"));
  INFO("stderr of the first epoch: " << first.err);
  REQUIRE(first.exit_code == 0);
  const std::string ckpt = dir.file("run/last.ckpt");
  const std::vector<uint8_t> before = read_bytes(ckpt);
  fs::remove(dir.file("run/final.npz"));

  // 1e300 overflows float: the first step makes the weights infinite, so the
  // loss of a following step is NaN whatever the data.
  const RunResult blown =
      run(kTrain, {"--resume", dir.file("run"), "--epochs", "2", "--lr", "1e300"});
  expect_failure(blown, {"spruce-train: error: loss is ", " at epoch 2 step ", dir.file("run")});
  const std::string line = error_lines(blown).front();
  CHECK((contains(line, "nan") || contains(line, "inf")));
  CHECK(read_bytes(ckpt) == before);
  CHECK_FALSE(fs::exists(dir.file("run/final.npz")));

  const RunResult eval = run(kEval, {"--model", ckpt, "--data", "mnist", "--data-dir",
                                     dir.file("data"), "--threads", "1"});
  INFO("spruce-eval stderr: " << eval.err);
  CHECK(eval.exit_code == 0);
  CHECK(contains(eval.out, "top-1"));
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

TEST_CASE("spruce-train: data errors name the file (status 1)") {
  TempDir dir;
  fs::create_directories(dir.path() / "empty");

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
}
