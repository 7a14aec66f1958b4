// spruce-export end to end: --help and --version; bad flags and values are
// one line with status 2; a missing model file or an output folder that does
// not exist is one line naming the file with status 1 and leaves no file; in a
// build without ONNX the tool says so (status 1). The committed dense
// ResNet-20 B checkpoint and MobileNetV1 .npz (tools/results/*-dense-15/),
// and the ResNet-20 B pruned to 90 % with its masks saved as .npz, export
// (folded and with --keep-batch-norm), pass onnx.checker and give spruce's
// logits in ONNX Runtime within 1e-4 (max abs): on a random batch and on the
// image of 0.5s whose logits the tool prints. The external checks are skipped
// without python3-onnx, node or onnxruntime-node (tests/models/onnx_check.h).
#include <doctest/doctest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/random.h"
#include "tests/models/onnx_check.h"
#include "tests/skip.h"
#include "tool_test_util.h"
#include "tools/common/model_io.h"

using namespace spruce;
using namespace spruce::tools_test;

namespace {

const std::string kExport = SPRUCE_EXPORT_BIN;
const std::string kResults = SPRUCE_RESULTS_DIR;
const bool kBuilt = models::onnx_export_available();
const std::string kCheckerMissing = onnx_checker_missing();
const std::string kOrtMissing = onnx_runtime_missing();

// Status `code`, nothing on stdout, stderr exactly one line
// "spruce-export: error: ..." containing every one of `parts`.
void expect_error(const RunResult& r, int code, const std::vector<std::string>& parts) {
  INFO("stdout: " << r.out);
  INFO("stderr: " << r.err);
  CHECK(r.signal == 0);
  CHECK(r.exit_code == code);
  CHECK(r.out.empty());
  const std::vector<std::string> err = lines(r.err);
  REQUIRE(err.size() == 1);
  CHECK(err[0].rfind("spruce-export: error: ", 0) == 0);
  for (const std::string& p : parts)
    CHECK_MESSAGE(err[0].find(p) != std::string::npos, "missing: " << p);
}

// The logits the tool printed for its image of 0.5s.
std::vector<float> printed_logits(const std::string& out) {
  const std::string marker = "image of 0.5s:";
  const size_t at = out.find(marker);
  REQUIRE(at != std::string::npos);
  std::istringstream in(out.substr(at + marker.size(), out.find('\n', at) - at - marker.size()));
  std::vector<float> v;
  for (float x; in >> x;) v.push_back(x);
  return v;
}

}  // namespace

TEST_CASE("spruce-export: --help, --version and usage errors (status 2, one line)") {
  RunResult r = run(kExport, {"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("usage: spruce-export --checkpoint PATH --out MODEL.onnx") != std::string::npos);
  CHECK(r.out.find("--[no-]keep-batch-norm") != std::string::npos);
  r = run(kExport, {"--version"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("spruce-export ", 0) == 0);

  TempDir dir;
  const std::string ckpt = kResults + "/resnet20b-fmnist-dense-15/last.ckpt";
  expect_error(run(kExport, {"--bogus"}), 2, {"--bogus"});
  expect_error(run(kExport, {"--out", dir.file("m.onnx")}), 2, {"--checkpoint is required"});
  expect_error(run(kExport, {"--checkpoint", ckpt}), 2, {"--out is required"});
  expect_error(
      run(kExport, {"--checkpoint", ckpt, "--out", dir.file("m.onnx"), "--image-size", "-1"}), 2,
      {"--image-size"});
  expect_error(
      run(kExport, {"--checkpoint", kResults + "/mobilenet-fmnist-dense-15/final.npz", "--model",
                    "mobilenet_v1", "--shortcut", "A", "--out", dir.file("m.onnx")}),
      2, {"--shortcut"});
  CHECK(dir.count() == 0);
}

TEST_CASE("spruce-export: a missing model or output folder is one line naming it (status 1)") {
  TempDir dir;
  expect_error(run(kExport, {"--checkpoint", dir.file("none.ckpt"), "--out", dir.file("m.onnx")}),
               1, {dir.file("none.ckpt")});
  if (kBuilt)
    expect_error(run(kExport, {"--checkpoint", kResults + "/resnet20b-fmnist-dense-15/last.ckpt",
                               "--out", dir.file("no/such/m.onnx")}),
                 1, {dir.file("no/such/m.onnx")});
  CHECK(dir.count() == 0);
}

TEST_CASE("spruce-export: a build without ONNX says so (status 1)" *
          doctest::skip(skip_unless(!kBuilt, "this build has the ONNX export"))) {
  TempDir dir;
  expect_error(run(kExport, {"--checkpoint", kResults + "/resnet20b-fmnist-dense-15/last.ckpt",
                             "--out", dir.file("m.onnx")}),
               1, {"ONNX export is not built", "libonnx-dev"});
  CHECK(dir.count() == 0);
}

TEST_CASE("spruce-export: the committed checkpoints give spruce's logits in ONNX Runtime" *
          doctest::skip(skip_unless(kOrtMissing.empty(), kOrtMissing))) {
  TempDir dir;
  // ResNet-20 B pruned to 90 % at random, saved as .npz with its masks.
  cli::ModelSpec r20b;
  r20b.config.in_channels = 1;
  {
    cli::LoadedModel dense =
        cli::load_model(kResults + "/resnet20b-fmnist-dense-15/last.ckpt", r20b);
    Generator gen(7);
    for (const std::string& name : dense.module->prunable_parameter_names()) {
      Tensor mask = Tensor::rand(dense.module->parameter(name).shape(), gen);
      for (float& m : mask.span()) m = m < 0.1f ? 1.f : 0.f;
      dense.module->set_mask(name, mask);
    }
    dense.module->apply_masks();
    cli::export_npz(dir.file("r20b-90.npz"), *dense.module);
  }
  struct Export {
    std::string model;
    std::vector<std::string> flags;
    cli::ModelSpec spec;
  };
  cli::ModelSpec mobilenet;
  mobilenet.name = "mobilenet_v1";
  mobilenet.config.in_channels = 1;
  const std::vector<Export> exports{
      {kResults + "/resnet20b-fmnist-dense-15/last.ckpt", {}, r20b},
      {kResults + "/resnet20b-fmnist-dense-15/last.ckpt", {"--keep-batch-norm"}, r20b},
      {kResults + "/mobilenet-fmnist-dense-15/final.npz", {"--model", "mobilenet_v1"}, mobilenet},
      {dir.file("r20b-90.npz"), {"--model", "resnet20", "--shortcut", "B"}, r20b},
  };
  std::vector<OrtJob> jobs;
  std::vector<Tensor> expected;
  for (size_t i = 0; i < exports.size(); ++i) {
    const Export& e = exports[i];
    CAPTURE(e.model);
    const std::string out = dir.file("m" + std::to_string(i) + ".onnx");
    std::vector<std::string> args{"--checkpoint", e.model, "--out", out};
    args.insert(args.end(), e.flags.begin(), e.flags.end());
    const RunResult r = run(kExport, args);
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("[batch, 1, 28, 28]") != std::string::npos);

    cli::LoadedModel loaded = cli::load_model(e.model, e.spec);
    loaded.module->eval();
    Generator gen(8);
    const Tensor x = Tensor::randn({4, 1, 28, 28}, gen);
    const Tensor half = Tensor::full({1, 1, 28, 28}, 0.5f);
    NoGradGuard no_grad;
    expected.push_back(loaded.module->forward(x));
    jobs.push_back({out, x});
    // The printed logits (5 decimals) are spruce's for the image of 0.5s.
    const std::vector<float> printed = printed_logits(r.out);
    CHECK(max_abs_difference(printed, loaded.module->forward(half)) <= 1e-5);
    expected.push_back(Tensor::from_data({1, 10}, printed));
    jobs.push_back({out, half});
  }
  const auto ort = run_in_onnx_runtime(dir, jobs);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const double diff = max_abs_difference(ort[i], expected[i]);
    const std::string input = i % 2 ? "the image of 0.5s (as printed)" : "a random batch";
    std::string flags;
    for (const std::string& f : exports[i / 2].flags) flags += " " + f;
    MESSAGE(exports[i / 2].model << flags << ", " << input << ": max |ORT - spruce| = " << diff);
    CHECK(diff <= 1e-4);
  }
}

TEST_CASE("spruce-export: the committed checkpoints' files pass onnx.checker" *
          doctest::skip(skip_unless(kCheckerMissing.empty(), kCheckerMissing))) {
  TempDir dir;
  const std::vector<std::vector<std::string>> exports{
      {"--checkpoint", kResults + "/resnet20b-fmnist-dense-15/last.ckpt", "--out",
       dir.file("r.onnx")},
      {"--checkpoint", kResults + "/resnet20b-fmnist-dense-15/last.ckpt", "--out",
       dir.file("rb.onnx"), "--keep-batch-norm", "--image-size", "32"},
      {"--checkpoint", kResults + "/mobilenet-fmnist-dense-15/final.npz", "--model", "mobilenet_v1",
       "--out", dir.file("m.onnx")}};
  for (const auto& args : exports) {
    const RunResult r = run(kExport, args);
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
  }
  check_with_onnx_checker(dir, {dir.file("r.onnx"), dir.file("rb.onnx"), dir.file("m.onnx")});
}
