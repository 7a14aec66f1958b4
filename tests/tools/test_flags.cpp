// Every tool's command line, end to end: an unknown flag, a bad value, a
// missing value and a stray argument are each refused with exit status 2 and
// one line "<tool>: error: ..." naming the flag; --help prints every flag with
// its default; --version prints "<tool> <version>"; deprecated spellings still
// work with a warning. And the JSON every tool writes (train's log.jsonl,
// prune --json, compare's results.json, bench --json) parses and holds the
// numbers the run printed or the rows it wrote to CSV.
#include <doctest/doctest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/version.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;
using nlohmann::json;

namespace {

const std::string kBench = SPRUCE_BENCH_BIN;
const std::string kBenchMpi = SPRUCE_BENCH_MPI_BIN;
const std::string kDemo = SPRUCE_DEMO_BIN;
const std::string kExport = SPRUCE_EXPORT_BIN;

std::string tool_name(const std::string& path) { return fs::path(path).filename().string(); }

void expect_usage_error(const std::string& tool, const std::vector<std::string>& args,
                        const std::vector<std::string>& parts) {
  const RunResult r = run(tool, args);
  INFO(tool_name(tool) << " stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  const std::vector<std::string> err = lines(r.err);
  REQUIRE(err.size() == 1);
  CHECK(starts_with(err[0], tool_name(tool) + ": error: "));
  for (const std::string& p : parts) CHECK_MESSAGE(contains(err[0], p), "missing: " << p);
}

json parse_file(const std::string& path) {
  INFO("file: " << path);
  return json::parse(read_text(path));
}

}  // namespace

TEST_CASE("every tool: bad flags are one line with status 2; --help and --version") {
  const std::vector<std::string> tools{kTrain, kEval,     kPrune, kCompare,
                                       kBench, kBenchMpi, kDemo,  kExport};
  for (const std::string& tool : tools) {
    CAPTURE(tool);
    expect_usage_error(tool, {"--bogus"}, {"unknown flag --bogus"});
    expect_usage_error(tool, {"--bogus=3"}, {"unknown flag --bogus"});
    expect_usage_error(tool, {"stray"}, {"unexpected argument 'stray'"});
    const RunResult help = run(tool, {"--help"});
    CHECK(help.exit_code == 0);
    CHECK(starts_with(help.out, "usage: " + tool_name(tool)));
    CHECK(contains(help.out, "--version"));
    const RunResult version = run(tool, {"--version"});
    CHECK(version.exit_code == 0);
    CHECK(version.out == tool_name(tool) + " " + SPRUCE_VERSION + "\n");
  }
  // A flag's value: missing, not a number, out of range, not a choice.
  for (const std::string& tool : {kTrain, kEval, kPrune, kCompare, kBench}) {
    CAPTURE(tool);
    expect_usage_error(tool, {"--threads"}, {"--threads needs a value"});
    expect_usage_error(tool, {"--threads", "x"}, {"--threads", "expected an integer, got 'x'"});
    expect_usage_error(tool, {"--threads", "0"}, {"--threads", "out of range", "1..256"});
  }
  expect_usage_error(kTrain, {"--data", "imagenet"}, {"--data", "'imagenet'", "expected one of"});
  expect_usage_error(kEval, {"--model", "nope"}, {"--model", "'nope'", "resnet20"});
  expect_usage_error(kBench, {"--models", "nope"}, {"--models", "'nope'", "resnet20"});
  expect_usage_error(kPrune, {"--sparsity", "1"}, {"--sparsity", "1 is out of range"});
  // The bench's hidden per-configuration mode: no iterations to take a median of, or not a number.
  expect_usage_error(kBench, {"--child", "resnet20", "1x28x28", "8", "1", "0", "1", "0"},
                     {"--child", "ITERS"});
  expect_usage_error(kBench, {"--child", "resnet20", "1x28x28", "8", "1", "x", "1", "0"},
                     {"--child ITERS: expected an integer, got 'x'"});
  // Every default is in the help text.
  const RunResult help = run(kTrain, {"--help"});
  CHECK(contains(help.out, "--epochs INT"));
  CHECK(contains(help.out, "(default: 3)"));
  CHECK(contains(help.out, "--[no-]nesterov"));
}

TEST_CASE("the same flag names the same thing: --checkpoint is a file, --model an architecture") {
  TempDir dir;
  const std::string bad = dir.file("bad.ckpt");
  write_bytes(bad, {'n', 'o', 't', ' ', 'a', ' ', 'c', 'k', 'p', 't'});
  for (const std::string& tool : {kEval, kPrune, kCompare, kExport}) {
    CAPTURE(tool);
    std::vector<std::string> rest{"--threads", "1"};  // spruce-eval writes nothing
    if (tool == kPrune || tool == kCompare) rest = {"--out", dir.file("o"), "--threads", "1"};
    if (tool == kExport) rest = {"--out", dir.file("o.onnx")};
    std::vector<std::string> args{"--checkpoint", bad};
    args.insert(args.end(), rest.begin(), rest.end());
    const RunResult r = run(tool, args);
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 1);
    CHECK(starts_with(r.err, tool_name(tool) + ": error: " + bad + ": "));
    // The old spelling (--model FILE) still reaches the same file, after a warning.
    args[0] = "--model";
    const RunResult old = run(tool, args);
    INFO("stderr: " << old.err);
    CHECK(old.exit_code == 1);
    CHECK(starts_with(old.err, tool_name(tool) + ": warning: --model"));
    CHECK(contains(old.err, tool_name(tool) + ": error: " + bad + ": "));
  }
  expect_usage_error(kPrune, {"--out", dir.file("p.ckpt")}, {"--checkpoint is required"});
  expect_usage_error(kCompare, {}, {"--checkpoint is required"});
  expect_usage_error(kEval, {}, {"--checkpoint is required"});
  expect_usage_error(kExport, {"--out", dir.file("m.onnx")}, {"--checkpoint is required"});
  for (const std::string& tool : {kExport, kPrune, kCompare})
    expect_usage_error(tool, {"--checkpoint", bad, "--out", dir.file("o"), "--model", "nope"},
                       {"--model", "'nope'", "resnet20"});
}

TEST_CASE("tools write JSON that parses and matches what they printed and wrote") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, tiny_train_args(dir, "model")));

  SUBCASE("spruce-train: log.jsonl has one object per epoch, as log.csv") {
    const std::vector<std::string> records = lines(read_text(dir.file("model/log.jsonl")));
    const std::vector<std::string> csv = lines(read_text(dir.file("model/log.csv")));
    REQUIRE(records.size() == 2);
    REQUIRE(csv.size() == 3);  // header + 2 epochs
    for (size_t i = 0; i < records.size(); ++i) {
      const json j = json::parse(records[i]);
      CHECK(j.at("epoch") == i + 1);
      CHECK(j.at("step") == 3 * (i + 1));
      CHECK(j.at("test_acc").get<double>() >= 0);
      CHECK(j.at("sparsity").contains("total"));
      // log.csv's row starts with the same epoch and step.
      CHECK(
          starts_with(csv[i + 1], std::to_string(i + 1) + "," + std::to_string(3 * (i + 1)) + ","));
    }
  }
  SUBCASE("spruce-prune --json") {
    const RunResult r =
        run(kPrune, {"--checkpoint", dir.file("model/last.ckpt"), "--data", "mnist", "--data-dir",
                     dir.file("data"), "--method", "magnitude", "--sparsity", "0.5", "--threads",
                     "1", "--out", dir.file("p.ckpt"), "--json", dir.file("p.json")});
    expect_success(r);
    const json j = parse_file(dir.file("p.json"));
    CHECK(j.at("checkpoint") == dir.file("model/last.ckpt"));
    CHECK(j.at("method") == "magnitude");
    CHECK(j.at("sparsity") == 0.5);
    CHECK(j.at("relative_damp") == 0.0);  // the Fisher settings are all recorded
    CHECK(j.at("taylor_scale") == 1.0);
    CHECK(j.at("update_scale") == 1.0);
    REQUIRE(!j.at("layers").empty());
    int64_t size = 0, pruned = 0;
    for (const auto& l : j.at("layers")) {
      size += l.at("size").get<int64_t>();
      pruned += l.at("pruned").get<int64_t>();
    }
    CHECK(static_cast<double>(pruned) / static_cast<double>(size) ==
          doctest::Approx(0.5).epsilon(0.01));
    char printed[48];
    std::snprintf(printed, sizeof printed, "after    %10.4f", j.at("loss_after").get<double>());
    CHECK(contains(r.out, printed));
  }
  SUBCASE("spruce-prune and spruce-compare read an .npz with --model and its options") {
    const std::vector<std::string> data{"--data",       "mnist", "--data-dir", dir.file("data"),
                                        "--eval-limit", "32",    "--threads",  "1"};
    auto with_data = [&](std::vector<std::string> a) {
      a.insert(a.end(), data.begin(), data.end());
      return a;
    };
    expect_success(run(kPrune, with_data({"--checkpoint", dir.file("model/last.ckpt"), "--method",
                                          "magnitude", "--sparsity", "0.5", "--out",
                                          dir.file("p.ckpt"), "--npz", dir.file("p.npz")})));
    const std::vector<std::string> model{"--model", "mobilenet_v1", "--width", "0.1"};
    std::vector<std::string> prune{"--checkpoint", dir.file("p.npz"), "--method",
                                   "magnitude",    "--sparsity",      "0.7",
                                   "--out",        dir.file("q.ckpt")};
    prune.insert(prune.end(), model.begin(), model.end());
    const RunResult r = run(kPrune, with_data(prune));
    expect_success(r);
    CHECK(contains(r.out, "mobilenet_v1 (in 1, classes 10, width 0.1)"));
    std::vector<std::string> cmp{"--checkpoint", dir.file("p.npz"), "--methods",
                                 "magnitude",    "--sparsities",    "0.7",
                                 "--out",        dir.file("cmp")};
    cmp.insert(cmp.end(), model.begin(), model.end());
    expect_success(run(kCompare, with_data(cmp)));
    // Without --model the .npz is read as the default architecture: the key is named.
    prune.resize(prune.size() - model.size());
    const RunResult wrong = run(kPrune, with_data(prune));
    CHECK(wrong.exit_code == 1);
    CHECK(contains(wrong.err, dir.file("p.npz") + ": load_state_dict:"));
  }
  SUBCASE("spruce-compare: results.json has the rows of results.csv") {
    expect_success(
        run(kCompare, {"--checkpoint", dir.file("model/last.ckpt"), "--data", "mnist", "--data-dir",
                       dir.file("data"), "--methods", "magnitude,magnitude-layer", "--sparsities",
                       "0.3,0.6", "--eval-limit", "32", "--threads", "1", "--out", dir.file("c")}));
    const json j = parse_file(dir.file("c/results.json"));
    CHECK(j.at("checkpoint") == dir.file("model/last.ckpt"));
    const std::vector<std::string> csv = lines(read_text(dir.file("c/results.csv")));
    REQUIRE(j.at("results").size() == 4);
    REQUIRE(csv.size() == 5);
    for (size_t i = 0; i < 4; ++i) {
      const json& row = j.at("results")[i];
      CHECK(starts_with(csv[i + 1], row.at("method").get<std::string>() + ","));
      CHECK(row.at("top1").get<double>() >= 0);
      CHECK(row.at("sparsity").get<double>() ==
            doctest::Approx(row.at("target_sparsity").get<double>()).epsilon(0.02));
    }
  }
}

TEST_CASE("spruce-bench --json: the sgemm figures parse; the old --batch still works") {
  TempDir dir;
  const RunResult r = run(kBench, {"--sections", "woodfisher", "--woodfisher", "10x5", "--wf-runs",
                                   "1", "--rank1-budget", "0", "--threads", "1", "--batch", "4",
                                   "--json", dir.file("b.json")});
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.err, "spruce-bench: warning: --batch is deprecated, use --batch-size"));
  const json j = parse_file(dir.file("b.json"));
  CHECK(j.at("threads") == 1);
  REQUIRE(j.at("woodfisher").size() == 1);
  CHECK(j.at("woodfisher")[0].at("block_size") == 10);
  CHECK(j.at("woodfisher")[0].at("fisher_samples") == 5);
  CHECK(j.at("woodfisher")[0].at("seconds").at("median").get<double>() > 0);
}
