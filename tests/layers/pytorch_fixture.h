// The small CNN of tests/layers/pytorch/make_fixture.py, built from spruce's
// layers with the same child order (so the same state_dict keys), and the
// fixture files PyTorch wrote for it.
#pragma once

#include <memory>
#include <string>

#include "layers/batch_norm2d.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/global_avg_pool2d.h"
#include "layers/linear.h"
#include "layers/relu.h"
#include "layers/sequential.h"

namespace spruce::test {

inline std::string pytorch_fixture(const std::string& name) {
  return std::string(SPRUCE_PYTORCH_FIXTURES) + "/" + name;
}

/// conv 3->8, bn, relu, conv 8->8 stride 2, bn, relu, pool, flatten, fc 8->5.
inline std::unique_ptr<Sequential> pytorch_fixture_model() {
  auto m = std::make_unique<Sequential>();
  m->emplace_back<Conv2d>(3, 8, 3, ops::Conv2dOptions{.padding = 1}, Bias::kNo);
  m->emplace_back<BatchNorm2d>(8);
  m->emplace_back<ReLU>();
  m->emplace_back<Conv2d>(8, 8, 3, ops::Conv2dOptions{.stride = 2, .padding = 1}, Bias::kNo);
  m->emplace_back<BatchNorm2d>(8);
  m->emplace_back<ReLU>();
  m->emplace_back<GlobalAvgPool2d>();
  m->emplace_back<Flatten>();
  m->emplace_back<Linear>(8, 5);
  return m;
}

}  // namespace spruce::test
