// spruce-eval end to end: a checkpoint and the .npz exported from the same
// run evaluate to the same numbers and --json writes the results; a missing
// file, a truncated checkpoint (named as such), a checkpoint of another
// model, one from a future format version, a checkpoint with one flipped
// byte (CRC mismatch), an .npz loaded as the wrong architecture and missing or
// truncated data files each exit with status 1 and one error line naming the
// file, and write no --json output.
#include <doctest/doctest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "tool_test_util.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

// A data set and a trained run shared by every test case (training it once
// keeps the suite fast).
struct Trained {
  TempDir dir;
  std::string data, ckpt, npz;
  Trained()
      : data(dir.file("data")), ckpt(dir.file("run/last.ckpt")), npz(dir.file("run/final.npz")) {
    write_mnist(data);
    const RunResult r =
        run(kTrain, {"--data", "mnist", "--data-dir", data, "--model", "resnet20", "--epochs", "1",
                     "--batch-size", "16", "--max-steps", "2", "--eval-limit", "16", "--threads",
                     "1", "--out", dir.file("run")});
    INFO("spruce-train stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
  }
};

const Trained& trained() {
  static const Trained t;
  return t;
}

std::vector<std::string> eval_args(const std::string& model, const std::string& data_dir,
                                   const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{"--checkpoint", model,    "--data",    "mnist",
                             "--data-dir",   data_dir, "--threads", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The lines of stdout from "loss ... top-1 ..." on: the results, without the
// header that names the model file.
std::string results(const std::string& out) {
  const size_t at = out.find("\nloss ");
  REQUIRE(at != std::string::npos);
  return out.substr(at);
}

// Status 1, stderr exactly one line "spruce-eval: error: ..." containing every
// one of `parts`, and no --json file.
void expect_failure(const RunResult& r, const std::vector<std::string>& parts,
                    const std::string& json) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == 1);
  const std::vector<std::string> err = lines(r.err);
  REQUIRE(err.size() == 1);
  CHECK(starts_with(err[0], "spruce-eval: error: "));
  for (const std::string& p : parts) CHECK_MESSAGE(contains(err[0], p), "missing: " << p);
  CHECK_FALSE(fs::exists(json));
}

}  // namespace

TEST_CASE("spruce-eval: a checkpoint and its .npz give the same results; --json is written") {
  const Trained& t = trained();
  TempDir out;
  const RunResult ck = run(kEval, eval_args(t.ckpt, t.data, {"--json", out.file("ck.json")}));
  INFO("stderr: " << ck.err);
  REQUIRE(ck.exit_code == 0);
  const RunResult npz = run(kEval, eval_args(t.npz, t.data, {"--model", "resnet20"}));
  INFO("stderr: " << npz.err);
  REQUIRE(npz.exit_code == 0);
  CHECK(results(ck.out) == results(npz.out));
  CHECK(contains(ck.out, "32 samples"));
  // The JSON holds what was printed: the samples, the top-1 and a row per class.
  const nlohmann::json json = nlohmann::json::parse(read_text(out.file("ck.json")));
  CHECK(json.at("checkpoint") == t.ckpt);
  CHECK(json.at("samples") == 32);
  char printed[32];
  std::snprintf(printed, sizeof printed, "top-1 %.2f%%", 100 * json.at("top1").get<double>());
  CHECK(contains(ck.out, printed));
  CHECK(json.at("classes").size() == 10);
  CHECK(json.at("confusion").size() == 10);
  int64_t counted = 0;
  for (const auto& row : json.at("confusion"))
    for (const auto& v : row) counted += v.get<int64_t>();
  CHECK(counted == 32);
}

TEST_CASE("spruce-eval: the old spellings --limit, --arch and --model FILE work, with a warning") {
  const Trained& t = trained();
  const RunResult r = run(kEval, {"--model", t.npz, "--arch", "resnet20", "--limit", "8", "--data",
                                  "mnist", "--data-dir", t.data, "--threads", "1"});
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "8 samples"));
  CHECK(contains(r.err, "spruce-eval: warning: --limit is deprecated, use --eval-limit"));
  CHECK(contains(r.err, "spruce-eval: warning: --arch is deprecated, use --model"));
  CHECK(contains(r.err, "--model FILE is deprecated"));
}

TEST_CASE("spruce-eval: unreadable models fail with status 1, name the file and write nothing") {
  const Trained& t = trained();
  TempDir dir;
  const std::string json = dir.file("out.json");
  const std::vector<uint8_t> good = read_bytes(t.ckpt);

  SUBCASE("missing file") {
    const std::string p = dir.file("missing.ckpt");
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})), {p, "no such file"}, json);
  }
  SUBCASE("truncated checkpoint") {
    const std::string p = dir.file("truncated.ckpt");
    write_bytes(
        p, std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(good.size() / 2)));
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})),
                   {p + ": truncated: expected at least ",
                    " bytes, file has " + std::to_string(good.size() / 2)},
                   json);
  }
  SUBCASE("checkpoint of another model: metadata says resnet32, tensors are resnet20's") {
    const std::string p = dir.file("other.ckpt");
    io::Checkpoint ck = io::load_checkpoint(t.ckpt);
    ck.set_meta("model.name", "resnet32");
    io::save_checkpoint(p, ck);
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})), {p + ": "}, json);
  }
  SUBCASE("checkpoint from a future version") {
    const std::string p = dir.file("future.ckpt");
    std::vector<uint8_t> bytes = good;
    bytes[8] = 9;  // the format version, little-endian u32 after the 8-byte magic
    write_bytes(p, bytes);
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})),
                   {p + ": written by a newer spruce (version 9"}, json);
  }
  SUBCASE("empty checkpoint") {
    const std::string p = dir.file("empty.ckpt");
    write_bytes(p, {});
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})), {p + ": ", "empty"}, json);
  }
  SUBCASE("one flipped byte: CRC mismatch") {
    const std::string p = dir.file("flipped.ckpt");
    std::vector<uint8_t> bytes = good;
    bytes[bytes.size() / 2] ^= 0x01;
    write_bytes(p, bytes);
    expect_failure(run(kEval, eval_args(p, t.data, {"--json", json})), {p + ": ", "CRC mismatch"},
                   json);
  }
  SUBCASE(".npz of another architecture") {
    expect_failure(run(kEval, eval_args(t.npz, t.data, {"--model", "resnet32", "--json", json})),
                   {t.npz + ": "}, json);
  }
  SUBCASE(".npz with another number of classes") {
    expect_failure(
        run(kEval, eval_args(t.npz, t.data,
                             {"--model", "resnet20", "--num-classes", "7", "--json", json})),
        {t.npz + ": "}, json);
  }
}

TEST_CASE("spruce-eval: data errors name the file and write nothing") {
  const Trained& t = trained();
  TempDir dir;
  const std::string json = dir.file("out.json");

  SUBCASE("test files missing") {
    fs::create_directories(dir.path() / "empty");
    expect_failure(run(kEval, eval_args(t.ckpt, dir.file("empty"), {"--json", json})),
                   {dir.file("empty/t10k-images-idx3-ubyte")}, json);
  }
  SUBCASE("fashion-mnist files missing: the Debian package is named") {
    fs::create_directories(dir.path() / "empty");
    std::vector<std::string> args = eval_args(t.ckpt, dir.file("empty"), {"--json", json});
    args[3] = "fashion-mnist";
    expect_failure(run(kEval, args),
                   {dir.file("empty/t10k-images-idx3-ubyte"), "dataset-fashion-mnist"}, json);
  }
  SUBCASE("truncated label file") {
    write_mnist(dir.path() / "data");
    const std::string labels = dir.file("data/t10k-labels-idx1-ubyte");
    std::vector<uint8_t> bytes = read_bytes(labels);
    bytes.resize(bytes.size() - 5);
    write_bytes(labels, bytes);
    expect_failure(run(kEval, eval_args(t.ckpt, dir.file("data"), {"--json", json})),
                   {labels + ": ", "bytes"}, json);
  }
}
