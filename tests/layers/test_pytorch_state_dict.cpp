// PyTorch -> spruce: a state_dict written by PyTorch itself
// (pytorch/make_fixture.py: float64 and int64 entries, bool and uint8 masks,
// a missing num_batches_tracked) loads into the same spruce model and gives
// the logits PyTorch recorded; wrong keys and shapes are one-line errors
// naming the file, the key and both shapes. Reads only committed files.
#include <doctest/doctest.h>

#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/io/npz.h"
#include "layers/state_dict_npz.h"
#include "tests/layers/pytorch_fixture.h"
#include "tests/test_util.h"

using namespace spruce;
using spruce::test::error_message;
using spruce::test::pytorch_fixture;
using spruce::test::pytorch_fixture_model;
using spruce::test::TempDir;

namespace {

Tensor entry(const NamedTensors& t, const std::string& name) {
  for (const auto& [k, v] : t)
    if (k == name) return v;
  FAIL("no entry " << name);
  return {};
}

// A copy of the fixture state dict with one entry changed (or dropped).
std::string edited_fixture(const TempDir& dir, const std::string& key, const Tensor& replacement,
                           const std::string& new_key = "") {
  NamedTensors state;
  for (auto& [k, v] : io::read_npz(pytorch_fixture("state_dict.npz"))) {
    if (k != key)
      state.emplace_back(k, v);
    else if (replacement.defined())
      state.emplace_back(new_key.empty() ? k : new_key, replacement);
  }
  const std::string path = dir.file("edited.npz");
  io::write_npz(path, state);
  return path;
}

}  // namespace

TEST_CASE("a PyTorch state_dict loads and gives PyTorch's logits") {
  auto model = pytorch_fixture_model();
  load_npz(*model, pytorch_fixture("state_dict.npz"));
  // int64 counter converted; the missing one kept its value.
  CHECK(model->buffer("1.num_batches_tracked").item() == 6.f);
  CHECK(model->buffer("4.num_batches_tracked").item() == 0.f);
  // bool and uint8 masks attached, with PyTorch's sparsity (50 % and 30 %).
  REQUIRE(model->has_mask("3.weight"));
  REQUIRE(model->has_mask("8.weight"));
  double zeros3 = 0, zeros8 = 0;
  for (float v : model->mask("3.weight").span()) zeros3 += v == 0.f;
  for (float v : model->mask("8.weight").span()) zeros8 += v == 0.f;
  CHECK(zeros3 == 288);
  CHECK(zeros8 == 12);

  const NamedTensors ref = io::read_npz(pytorch_fixture("reference.npz"));
  const Tensor x = entry(ref, "input"), expected = entry(ref, "logits");
  model->eval();
  NoGradGuard no_grad;
  const Tensor logits = model->forward(x);
  REQUIRE(logits.shape() == expected.shape());
  double worst = 0;
  for (int64_t i = 0; i < logits.numel(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(logits.at(i) - expected.at(i))));
  MESSAGE("largest |spruce - PyTorch| logit difference: " << worst);
  CHECK(worst < 1e-5);
}

TEST_CASE("wrong keys and shapes are one-line errors naming the file and the key") {
  TempDir dir;
  auto model = pytorch_fixture_model();
  auto check_error = [&](const std::string& path, const std::string& needle) {
    const std::string m = error_message<FormatError>([&] { load_npz(*model, path); });
    CAPTURE(m);
    CHECK(m.rfind(path + ": ", 0) == 0);
    CHECK(m.find(needle) != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  };
  check_error(edited_fixture(dir, "8.weight", Tensor::zeros({5, 9})),
              "shape mismatch for '8.weight': given [5, 9], module has [5, 8]");
  check_error(edited_fixture(dir, "1.running_mean", Tensor::zeros({8}), "1.running_average"),
              "unexpected key '1.running_average'");
  check_error(edited_fixture(dir, "4.running_var", Tensor()), "missing key '4.running_var'");
  // A failed load leaves the module as it was.
  CHECK(model->buffer("1.num_batches_tracked").item() == 0.f);
  CHECK_FALSE(model->has_mask("3.weight"));
}
