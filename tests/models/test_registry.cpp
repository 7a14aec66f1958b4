// The model registry: every model is listed and builds, configs reach the
// models, seeds are honoured, unknown names and bad configs are rejected, and
// each model's default prunable patterns select the expected weights.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "models/registry.h"
#include "tests/layers/layer_checks.h"

using namespace spruce;
using namespace spruce::models;

TEST_CASE("model_names lists every built-in model and each one builds") {
  const std::vector<std::string> names = model_names();
  CHECK(names == std::vector<std::string>{"resnet20", "resnet32", "resnet44", "resnet56",
                                          "resnet110", "mobilenet_v1"});
  NoGradGuard no_grad;
  const Tensor x = testing::randn({2, 1, 12, 12}, 1);
  for (const std::string& name : names) {
    INFO(name);
    auto model = build_model(name, {.in_channels = 1, .num_classes = 7});
    REQUIRE(model);
    CHECK(model->is_training());
    CHECK(model->forward(x).shape() == Shape{2, 7});
  }
}

TEST_CASE("build_model passes the config on") {
  CHECK(build_model("resnet20")->num_parameters() == 272474);
  CHECK(build_model("resnet20", {.options = {{"shortcut", "A"}}})->num_parameters() == 269722);
  CHECK(build_model("resnet20", {.in_channels = 1})->num_parameters() == 272186);
  CHECK(build_model("resnet32")->num_parameters() == 466906);
  CHECK(build_model("resnet44", {.options = {{"shortcut", "A"}}})->num_parameters() == 658586);
  CHECK(build_model("resnet110", {.options = {{"shortcut", "A"}}})->num_parameters() == 1727962);
  CHECK(build_model("mobilenet_v1")->num_parameters() == 3217226);
  CHECK(build_model("mobilenet_v1", {.options = {{"width", "0.25"}}})->num_parameters() == 215642);
  CHECK(build_model("resnet20", {.num_classes = 100})->parameter("fc.weight").shape() ==
        Shape{100, 64});
}

TEST_CASE("build_model is seeded") {
  auto a = build_model("resnet20", {.seed = 3});
  auto b = build_model("resnet20", {.seed = 3});
  auto c = build_model("resnet20", {.seed = 4});
  CHECK(testing::max_abs_diff(a->parameter("layer2.1.conv2.weight"),
                              b->parameter("layer2.1.conv2.weight")) == 0.f);
  CHECK(testing::max_abs_diff(a->parameter("fc.weight"), b->parameter("fc.weight")) == 0.f);
  CHECK(testing::max_abs_diff(a->parameter("layer2.1.conv2.weight"),
                              c->parameter("layer2.1.conv2.weight")) > 0.f);
}

TEST_CASE("unknown names and invalid configs are usage errors") {
  CHECK_THROWS_WITH_AS(
      build_model("resnet18"),
      "unknown model 'resnet18'; valid models: resnet20, resnet32, resnet44, resnet56, "
      "resnet110, mobilenet_v1",
      UsageError);
  CHECK_THROWS_WITH_AS(default_prunable_patterns("vgg16"), doctest::Contains("mobilenet_v1"),
                       UsageError);
  CHECK_THROWS_AS(build_model("resnet20", {.options = {{"shortcut", "C"}}}), UsageError);
  CHECK_THROWS_WITH_AS(build_model("resnet20", {.options = {{"width", "0.5"}}}),
                       doctest::Contains("width"), UsageError);
  CHECK_THROWS_AS(build_model("mobilenet_v1", {.options = {{"width", "-1"}}}), UsageError);
  CHECK_THROWS_AS(build_model("mobilenet_v1", {.in_channels = 0}), UsageError);
}

TEST_CASE("default prunable patterns select the reference's weights") {
  const int64_t blocks_per_stage[] = {3, 5, 7, 9, 18};
  int i = 0;
  for (const char* name : {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110"}) {
    INFO(name);
    auto model = build_model(name);
    const std::vector<std::string> selected =
        model->prunable_parameter_names(default_prunable_patterns(name));
    CHECK(static_cast<int64_t>(selected.size()) == 6 * blocks_per_stage[i++]);  // 2 convs per block
    for (const std::string& s : selected) {
      CHECK(s.find("shortcut") == std::string::npos);
      CHECK(s != "conv1.weight");
      CHECK(s != "fc.weight");
    }
  }
  auto mobile = build_model("mobilenet_v1");
  const std::vector<std::string> selected =
      mobile->prunable_parameter_names(default_prunable_patterns("mobilenet_v1"));
  CHECK(selected.size() == 28);  // conv1 + 13 * (depthwise + pointwise) + linear
  CHECK(selected.front() == "conv1.weight");
  CHECK(selected[1] == "layers.0.conv1.weight");
  CHECK(selected.back() == "linear.weight");
}

TEST_CASE("each model's own options come from its table row, with defaults") {
  REQUIRE(model_options("resnet20").size() == 1);
  CHECK(model_options("resnet56")[0].name == "shortcut");
  CHECK(model_options("resnet56")[0].default_value == "B");
  REQUIRE(model_options("mobilenet_v1").size() == 1);
  CHECK(model_options("mobilenet_v1")[0].name == "width");
  std::vector<std::string> all;
  for (const ModelOption& o : all_model_options()) all.push_back(o.name);
  CHECK(all == std::vector<std::string>{"shortcut", "width"});
  // Empty means the default; a misspelt option names itself and the valid ones.
  CHECK(build_model("resnet20", {.options = {{"shortcut", ""}}})->num_parameters() == 272474);
  CHECK_THROWS_WITH_AS(build_model("mobilenet_v1", {.options = {{"widht", "0.5"}}}),
                       "mobilenet_v1 takes no option 'widht' (its options: width)", UsageError);
  CHECK_THROWS_WITH_AS(build_model("mobilenet_v1", {.options = {{"width", "x"}}}),
                       "mobilenet_v1: width: 'x', expected a positive number", UsageError);
}
