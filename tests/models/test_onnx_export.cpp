// ONNX export (models/onnx_export.h), checked end to end on ResNet-20 with
// option-A and option-B shortcuts, MobileNetV1 (width 0.25) and a Sequential
// of every other supported layer, at 1x28x28 and 3x32x32, dense and pruned,
// batch norms folded and kept, with random weights and random batch-norm
// statistics (fresh ones, mean 0 and variance 1, would hide a wrong fold):
//   - the graph: opset, IR version, the ops each model needs, the symbolic
//     batch, pruned weights exact zeros in the initializers (also weights
//     whose mask is attached but not yet applied);
//   - onnx.checker.check_model(full_check=True) in /usr/bin/python3 (Debian's
//     python3-onnx), which also infers every shape;
//   - ONNX Runtime (npm onnxruntime-node, run by tests/models/onnx_run.js
//     under node) gives spruce's eval-mode logits: max |ORT - spruce| over all
//     logits <= 1e-4 (absolute; the logits here are of order 1, the largest is
//     printed);
//   - unsupported modules and shapes that do not fit are one-line errors
//     naming the module.
// Cases needing python3-onnx, node or onnxruntime-node are reported as
// skipped without them (tests/models/onnx_check.h says how they are found).
// In a build without ONNX only the case checking the export's message runs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/io/file.h"
#include "core/random.h"
#include "layers/avg_pool2d.h"
#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/global_avg_pool2d.h"
#include "layers/linear.h"
#include "layers/max_pool2d.h"
#include "layers/relu.h"
#include "layers/sequential.h"
#include "models/mobilenet_v1.h"
#include "models/onnx_export.h"
#include "models/resnet.h"
#include "tests/models/onnx_check.h"
#include "tests/skip.h"
#include "tests/test_util.h"

#if SPRUCE_HAVE_ONNX
#define ONNX_ML 1
#include <onnx/onnx_pb.h>
#endif

using namespace spruce;
using spruce::test::skip_unless;
using spruce::test::TempDir;

namespace {

const bool kBuilt = models::onnx_export_available();
const std::string kCheckerMissing = spruce::test::onnx_checker_missing();
const std::string kOrtMissing = spruce::test::onnx_runtime_missing();

// Batch-norm statistics and affine parameters far from their initial values,
// so that folding or applying them wrongly changes the logits.
void randomize_batch_norms(Module& model, Generator& gen) {
  for (const auto& [key, t] : model.state_dict()) {
    const std::string suffix = "running_mean";
    if (key.size() < suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix))
      continue;
    const std::string prefix = key.substr(0, key.size() - suffix.size());
    const int64_t c = t.numel();
    model.buffer(prefix + "running_mean").copy_from(Tensor::randn({c}, gen, 0.f, 0.3f));
    model.buffer(prefix + "running_var").copy_from(Tensor::rand({c}, gen, 0.5f, 2.f));
    model.parameter(prefix + "weight").copy_from(Tensor::rand({c}, gen, 0.5f, 1.5f));
    model.parameter(prefix + "bias").copy_from(Tensor::randn({c}, gen, 0.f, 0.3f));
  }
}

// Random masks keeping `density` of every prunable weight, applied; the last
// weight's mask is attached but not applied (its pruned weights stay nonzero
// in storage: the forward, and so the export, must use weight * mask).
void prune(Module& model, Generator& gen, float density) {
  const std::vector<std::string> names = model.prunable_parameter_names();
  for (const std::string& name : names) {
    Tensor mask = Tensor::rand(model.parameter(name).shape(), gen);
    for (float& m : mask.span()) m = m < density ? 1.f : 0.f;
    model.set_mask(name, mask);
  }
  const Tensor unapplied = model.parameter(names.back()).clone();
  model.apply_masks();
  model.parameter(names.back()).copy_from(unapplied);
}

struct Case {
  std::string name;
  std::function<std::unique_ptr<Module>(Generator&)> build;
  std::vector<int64_t> sample;  // C, H, W
  bool pruned = false;
  bool fold = true;
};

std::unique_ptr<Module> resnet20(char shortcut, int64_t channels, Generator& gen) {
  return std::make_unique<models::ResNet>(
      models::ResNetOptions{.depth = 20, .in_channels = channels, .shortcut = shortcut}, gen);
}

std::unique_ptr<Module> mobilenet(int64_t channels, Generator& gen) {
  return std::make_unique<models::MobileNetV1>(
      models::MobileNetV1Options{.in_channels = channels, .width = 0.25f}, gen);
}

// Every layer the export knows besides the built-in models' blocks: a conv
// with a bias followed by a batch norm (folded), a grouped conv, a batch norm
// after a ReLU (a BatchNormalization node), max and average pooling with
// padding, global pooling, Flatten, Linear with and without a bias.
std::unique_ptr<Module> layers_chain(int64_t channels, Generator& gen) {
  auto s = std::make_unique<Sequential>();
  s->push_back(
      std::make_unique<Conv2d>(channels, 8, 3, ops::Conv2dOptions{.padding = 1}, Bias::kYes, gen));
  s->emplace_back<BatchNorm2d>(8);
  s->emplace_back<ReLU>();
  s->emplace_back<MaxPool2d>(ops::Pool2dOptions{.kernel = 3, .stride = 2, .padding = 1});
  s->push_back(std::make_unique<Conv2d>(
      8, 12, 3, ops::Conv2dOptions{.stride = 2, .padding = 1, .groups = 2}, Bias::kNo, gen));
  s->emplace_back<ReLU>();
  s->emplace_back<BatchNorm2d>(12);
  s->emplace_back<AvgPool2d>(ops::Pool2dOptions{.kernel = 2, .stride = 2, .padding = 1});
  s->emplace_back<GlobalAvgPool2d>();
  s->emplace_back<Flatten>();
  s->push_back(std::make_unique<Linear>(12, 16, Bias::kNo, gen));
  s->emplace_back<ReLU>();
  s->push_back(std::make_unique<Linear>(16, 10, Bias::kYes, gen));
  return s;
}

std::vector<Case> cases() {
  using G = Generator;
  return {
      {"resnet20a-1x28-pruned", [](G& g) { return resnet20('A', 1, g); }, {1, 28, 28}, true},
      {"resnet20a-3x32", [](G& g) { return resnet20('A', 3, g); }, {3, 32, 32}},
      {"resnet20b-3x32-pruned", [](G& g) { return resnet20('B', 3, g); }, {3, 32, 32}, true},
      {"resnet20b-1x28", [](G& g) { return resnet20('B', 1, g); }, {1, 28, 28}},
      {"resnet20b-3x32-pruned-bn",
       [](G& g) { return resnet20('B', 3, g); },
       {3, 32, 32},
       true,
       false},
      {"mobilenet-1x28-pruned", [](G& g) { return mobilenet(1, g); }, {1, 28, 28}, true},
      {"mobilenet-3x32", [](G& g) { return mobilenet(3, g); }, {3, 32, 32}},
      {"mobilenet-3x32-pruned-bn", [](G& g) { return mobilenet(3, g); }, {3, 32, 32}, true, false},
      {"layers-3x32-pruned", [](G& g) { return layers_chain(3, g); }, {3, 32, 32}, true},
      {"layers-1x28-bn", [](G& g) { return layers_chain(1, g); }, {1, 28, 28}, false, false},
  };
}

struct Built {
  std::unique_ptr<Module> model;
  models::OnnxExportOptions options;
};

Built build(const Case& c, uint64_t seed) {
  Generator gen(seed);
  Built b{c.build(gen), {}};
  randomize_batch_norms(*b.model, gen);
  if (c.pruned) prune(*b.model, gen, 0.3f);
  b.model->eval();
  b.options.fold_batch_norm = c.fold;
  return b;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a build without ONNX says so" *
          doctest::skip(skip_unless(!kBuilt, "this build has the ONNX export"))) {
  auto model = resnet20('A', 1, default_generator());
  const std::string msg = error_of([&] { models::onnx_model_bytes(*model, {1, 28, 28}); });
  CHECK(msg.find("ONNX export is not built") != std::string::npos);
  CHECK(msg.find("libonnx-dev") != std::string::npos);
}

#if SPRUCE_HAVE_ONNX
namespace {
std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> n;
  for (const auto& node : m.graph().node()) ++n[node.op_type()];
  return n;
}

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto m;
  REQUIRE(m.ParseFromString(bytes));
  return m;
}

const onnx::TensorProto& initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return t;
  FAIL("no initializer " << name);
  return m.graph().initializer(0);
}
}  // namespace

TEST_CASE("the graphs hold the ops of each model") {
  const Built a = build(cases()[0], 1);  // ResNet-20 A, pruned
  const onnx::ModelProto ma = parse(models::onnx_model_bytes(*a.model, {1, 28, 28}));
  CHECK(ma.ir_version() == models::kOnnxIrVersion);
  REQUIRE(ma.opset_import_size() == 1);
  CHECK(ma.opset_import(0).version() == models::kOnnxOpset);
  // 19 convs (BN folded), a ReLU after each conv pair and block, 9 residual
  // adds, 2 option-A shortcuts (Slice + Pad), the head.
  CHECK(op_counts(ma) == std::map<std::string, int>{{"Add", 9},
                                                    {"Conv", 19},
                                                    {"Flatten", 1},
                                                    {"Gemm", 1},
                                                    {"GlobalAveragePool", 1},
                                                    {"Pad", 2},
                                                    {"Relu", 19},
                                                    {"Slice", 2}});
  const auto& in = ma.graph().input(0).type().tensor_type().shape();
  REQUIRE(in.dim_size() == 4);
  CHECK(in.dim(0).dim_param() == "batch");
  CHECK(in.dim(1).dim_value() == 1);
  const auto& out = ma.graph().output(0);
  CHECK(out.name() == "logits");
  CHECK(out.type().tensor_type().shape().dim(1).dim_value() == 10);

  const Built b = build(cases()[4], 1);  // ResNet-20 B, batch norms kept
  const onnx::ModelProto mb = parse(models::onnx_model_bytes(*b.model, {3, 32, 32}, b.options));
  CHECK(op_counts(mb) == std::map<std::string, int>{{"Add", 9},
                                                    {"BatchNormalization", 21},
                                                    {"Conv", 21},
                                                    {"Flatten", 1},
                                                    {"Gemm", 1},
                                                    {"GlobalAveragePool", 1},
                                                    {"Relu", 19}});
  // Kept batch norms carry their state_dict names.
  CHECK(initializer(mb, "layer2.0.shortcut.1.running_var").dims(0) == 32);

  const Built n = build(cases()[5], 1);  // MobileNetV1
  const onnx::ModelProto mn = parse(models::onnx_model_bytes(*n.model, {1, 28, 28}));
  CHECK(op_counts(mn) ==
        std::map<std::string, int>{
            {"Conv", 27}, {"Flatten", 1}, {"Gemm", 1}, {"GlobalAveragePool", 1}, {"Relu", 27}});
}

TEST_CASE("pruned weights are exact zeros in the initializers") {
  for (const bool fold : {true, false}) {
    CAPTURE(fold);
    const Built b = build(cases()[2], 2);  // ResNet-20 B, pruned to 30 % density
    models::OnnxExportOptions options;
    options.fold_batch_norm = fold;
    models::OnnxExportSummary summary;
    const onnx::ModelProto m =
        parse(models::onnx_model_bytes(*b.model, {3, 32, 32}, options, &summary));
    int64_t masked = 0;
    for (const auto& [name, mask] : b.model->named_masks()) {
      CAPTURE(name);
      const onnx::TensorProto& t = initializer(m, name);
      REQUIRE(t.raw_data().size() == static_cast<size_t>(mask.numel()) * sizeof(float));
      std::vector<float> w(static_cast<size_t>(mask.numel()));
      std::memcpy(w.data(), t.raw_data().data(), t.raw_data().size());
      int64_t wrong = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        if (mask.span()[i] == 0.f) {
          ++masked;
          wrong += w[i] != 0.f;
        } else {
          wrong += w[i] == 0.f;
        }
      }
      CHECK(wrong == 0);
    }
    CHECK(masked > 0);
    CHECK(summary.zero_parameters >= masked);
    CHECK(summary.nodes == m.graph().node_size());
  }
}

TEST_CASE("unsupported modules and shapes that do not fit are one-line errors naming them") {
  struct Custom : Module {
    Tensor forward(const Tensor& x) override { return x; }
  };
  auto seq = std::make_unique<Sequential>();
  seq->emplace_back<ReLU>();
  seq->push_back(std::make_unique<Custom>());
  std::string msg = error_of([&] { models::onnx_model_bytes(*seq, {4}); });
  CHECK(msg.find("'1' is a ") != std::string::npos);
  CHECK(msg.find("Custom") != std::string::npos);
  CHECK(msg.find("does not support") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);

  auto net = resnet20('A', 1, default_generator());
  msg = error_of([&] { models::onnx_model_bytes(*net, {3, 32, 32}); });
  CHECK(msg == "ONNX export: 'conv1' takes [1, H, W] per sample, but gets [3, 32, 32]");
  msg = error_of([&] { models::onnx_model_bytes(*net, {1, 0, 28}); });
  CHECK(msg.find("has a dimension below 1") != std::string::npos);

  auto mlp = std::make_unique<Sequential>();
  mlp->push_back(std::make_unique<Linear>(8, 4));
  msg = error_of([&] { models::onnx_model_bytes(*mlp, {9}); });
  CHECK(msg == "ONNX export: '0' takes [8] per sample, but gets [9]");
  CHECK(error_of([&] { models::onnx_model_bytes(*mlp, {8}); }).empty());
}

TEST_CASE("a failed write keeps the previous file and leaves no temporary") {
  TempDir dir;
  auto net = mobilenet(1, default_generator());
  const std::string path = dir.file("m.onnx");
  models::export_onnx(*net, {1, 28, 28}, path);
  const std::vector<uint8_t> before = spruce::test::read_bytes(path);
  CHECK_THROWS_AS(models::export_onnx(*net, {3, 28, 28}, path), UsageError);
  io::inject_write_failure_after(100);
  CHECK_THROWS_AS(models::export_onnx(*net, {1, 32, 32}, path), IoError);
  CHECK(spruce::test::read_bytes(path) == before);
  CHECK(dir.count() == 1);
  CHECK_THROWS_AS(models::export_onnx(*net, {1, 28, 28}, dir.file("no/such/dir.onnx")), IoError);
}
#endif  // SPRUCE_HAVE_ONNX

TEST_CASE("the exported files pass onnx.checker with full shape inference" *
          doctest::skip(skip_unless(kCheckerMissing.empty(), kCheckerMissing))) {
  TempDir dir;
  std::vector<std::string> files;
  for (const Case& c : cases()) {
    const Built b = build(c, 3);
    files.push_back(dir.file(c.name + ".onnx"));
    models::export_onnx(*b.model, c.sample, files.back(), b.options);
  }
  spruce::test::check_with_onnx_checker(dir, files);
}

TEST_CASE("ONNX Runtime gives spruce's logits within 1e-4" *
          doctest::skip(skip_unless(kOrtMissing.empty(), kOrtMissing))) {
  TempDir dir;
  std::vector<spruce::test::OrtJob> jobs;
  std::vector<Tensor> expected;
  for (const Case& c : cases()) {
    const Built b = build(c, 4);
    Generator gen(5);
    const Tensor x = Tensor::randn({3, c.sample[0], c.sample[1], c.sample[2]}, gen);
    NoGradGuard no_grad;
    expected.push_back(b.model->forward(x));
    jobs.push_back({dir.file(c.name + ".onnx"), x});
    models::export_onnx(*b.model, c.sample, jobs.back().model, b.options);
  }
  const auto ort = spruce::test::run_in_onnx_runtime(dir, jobs);
  for (size_t i = 0; i < jobs.size(); ++i) {
    double largest = 0;
    for (float v : expected[i].span())
      largest = std::max(largest, std::abs(static_cast<double>(v)));
    const double diff = spruce::test::max_abs_difference(ort[i], expected[i]);
    MESSAGE(cases()[i].name << ": max |ORT - spruce| = " << diff << " (largest |logit| " << largest
                            << ")");
    CHECK(diff <= 1e-4);
  }
}
