// spruce-train's options around each gradual pruning step (issue 15), end to
// end on the tiny model and data of test_train_gradual.cpp, each against an
// answer known without the code under test:
//   --prune-lr-factor F   log.csv's learning rate is F times the constant LR
//                         exactly in the epochs that hold a pruning step;
//   --prune-reset-momentum  the run equals the plain one up to the first
//                         optimizer step after a pruning step, then differs;
//   --sub-steps k         with magnitude (no weight update between
//                         sub-steps) the masks equal those of k = 1;
//   --damp-weight-decay   the same run as --damp λ + weight decay;
//   --fisher-augment      Fisher samples with crop and flip: other weights
//                         than without, the same ones when run again.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/io/npz.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

// 4 epochs of 2 steps, constant LR 0.05, pruning at the start of epochs 1 and 2.
std::vector<std::string> args(const TempDir& dir, const std::string& out, const std::string& method,
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
                             "4",
                             "--batch-size",
                             "16",
                             "--max-steps",
                             "2",
                             "--eval-limit",
                             "32",
                             "--prune-eval-limit",
                             "32",
                             "--threads",
                             "1",
                             "--schedule",
                             "constant",
                             "--lr",
                             "0.05",
                             "--out",
                             dir.file(out),
                             "--prune-method",
                             method,
                             "--prune-unit",
                             "epoch",
                             "--prune-start",
                             "1",
                             "--prune-end",
                             "2",
                             "--initial-sparsity",
                             "0.3",
                             "--final-sparsity",
                             "0.6",
                             "--fisher-samples",
                             "8",
                             "--fisher-batch",
                             "2",
                             "--block-size",
                             "16"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Column `name` of a CSV file, one entry per data row.
std::vector<std::string> column(const std::string& path, const std::string& name) {
  const std::vector<std::string> rows = lines(read_text(path));
  REQUIRE(!rows.empty());
  auto split = [](const std::string& line) {
    std::vector<std::string> cols;
    size_t start = 0;
    for (size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
      cols.push_back(line.substr(start, comma - start));
    cols.push_back(line.substr(start));
    return cols;
  };
  const std::vector<std::string> header = split(rows[0]);
  size_t c = 0;
  while (c < header.size() && header[c] != name) ++c;
  REQUIRE(c < header.size());
  std::vector<std::string> out;
  for (size_t r = 1; r < rows.size(); ++r) out.push_back(split(rows[r]).at(c));
  return out;
}

// The masks of final.npz, concatenated in file order.
std::vector<float> masks(const std::string& npz) {
  std::vector<float> out;
  for (const auto& [name, t] : io::read_npz(npz))
    if (name.size() > 5 && name.compare(name.size() - 5, 5, "_mask") == 0)
      out.insert(out.end(), t.data(), t.data() + t.numel());
  REQUIRE(!out.empty());
  return out;
}

}  // namespace

TEST_CASE("--prune-lr-factor scales the LR in exactly the epochs that hold a pruning step") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, args(dir, "a", "magnitude", {"--prune-lr-factor", "0.5"})));
  CHECK(column(dir.file("a/log.csv"), "lr") ==
        std::vector<std::string>{"0.05", "0.025", "0.025", "0.05"});
}

TEST_CASE("--prune-reset-momentum: the same run until the first step after a pruning step") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, args(dir, "plain", "magnitude")));
  expect_success(run(kTrain, args(dir, "reset", "magnitude", {"--prune-reset-momentum"})));
  const auto plain = column(dir.file("plain/log.csv"), "train_loss");
  const auto reset = column(dir.file("reset/log.csv"), "train_loss");
  REQUIRE(plain.size() == 4);
  REQUIRE(reset.size() == 4);
  CHECK(plain[0] == reset[0]);  // epoch 1: no pruning yet
  CHECK(plain[1] != reset[1]);  // epoch 2 starts with a pruning step, then fresh momentum
}

TEST_CASE("--sub-steps k with magnitude pruning gives the masks of one step") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, args(dir, "one", "magnitude")));
  expect_success(run(kTrain, args(dir, "three", "magnitude", {"--sub-steps", "3"})));
  CHECK(masks(dir.file("three/final.npz")) == masks(dir.file("one/final.npz")));
  CHECK(column(dir.file("three/pruning.csv"), "sparsity") ==
        column(dir.file("one/pruning.csv"), "sparsity"));
  // With WoodFisher the Fisher is recomputed between sub-steps: other weights, same sparsity.
  expect_success(run(kTrain, args(dir, "wf1", "woodfisher")));
  expect_success(run(kTrain, args(dir, "wf3", "woodfisher", {"--sub-steps", "3"})));
  CHECK(column(dir.file("wf3/pruning.csv"), "sparsity") ==
        column(dir.file("wf1/pruning.csv"), "sparsity"));
  CHECK(io::read_npz(dir.file("wf3/final.npz")).size() ==
        io::read_npz(dir.file("wf1/final.npz")).size());
  CHECK(read_text(dir.file("wf3/final.npz")) != read_text(dir.file("wf1/final.npz")));
}

TEST_CASE("--fisher-augment draws other Fisher samples, reproducibly") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, args(dir, "plain", "woodfisher")));
  expect_success(run(kTrain, args(dir, "aug", "woodfisher", {"--fisher-augment"})));
  expect_success(run(kTrain, args(dir, "aug2", "woodfisher", {"--fisher-augment"})));
  CHECK(read_text(dir.file("aug/final.npz")) == read_text(dir.file("aug2/final.npz")));
  // Other Fisher samples, another OBS update (the masks may agree: with m = 8 the
  // statistic is close to magnitude's).
  CHECK(read_text(dir.file("aug/final.npz")) != read_text(dir.file("plain/final.npz")));
}

TEST_CASE("--damp-weight-decay damps the Fisher with λ + weight decay") {
  TempDir dir;
  write_mnist(dir.path() / "data");
  // 0.25 + 0.5 = 0.75 exactly, so both runs use the very same λ.
  expect_success(
      run(kTrain, args(dir, "sum", "woodfisher",
                       {"--weight-decay", "0.5", "--damp", "0.25", "--damp-weight-decay"})));
  expect_success(
      run(kTrain, args(dir, "given", "woodfisher", {"--weight-decay", "0.5", "--damp", "0.75"})));
  expect_success(
      run(kTrain, args(dir, "plain", "woodfisher", {"--weight-decay", "0.5", "--damp", "0.25"})));
  CHECK(read_text(dir.file("sum/final.npz")) == read_text(dir.file("given/final.npz")));
  CHECK(read_text(dir.file("sum/final.npz")) != read_text(dir.file("plain/final.npz")));
}
