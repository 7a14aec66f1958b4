// Ctrl-C and SIGTERM (README, "Reliability guarantees"), end to end with the
// built tools: the first signal lets the tool finish what it is doing and
// save atomically, then exit with 130 (SIGINT) or 143 (SIGTERM) and one line
// saying what was kept; a second signal ends it at once, leaving the
// previous files intact and no temporary behind.
#include <doctest/doctest.h>
#include <signal.h>

#include <string>
#include <vector>

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
  write_mnist(dir.path() / "data");
  expect_success(run(kTrain, tiny_train_args(dir, "model", {"--epochs", "1"})));
  fs::create_directories(dir.file("p"));
  const std::vector<std::string> prune{"--model",
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
  CHECK(twice.signal == SIGINT);
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
  const std::vector<std::string> compare{"--model",      dir.file("model/last.ckpt"),
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
