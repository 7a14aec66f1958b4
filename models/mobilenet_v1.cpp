// MobileNetV1: depthwise-separable blocks composed from layers/.
#include "mobilenet_v1.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "../core/error.h"
#include "../core/ops/pooling.h"
#include "../layers/conv_batch_norm.h"

namespace spruce::models {
namespace {
struct BlockSpec {
  int64_t out_channels;  // before the width multiplier
  int64_t stride;
};
// Table 1 of the MobileNet paper, after the first conv.
constexpr BlockSpec kBlocks[13] = {{64, 1},  {128, 2},  {128, 1}, {256, 2}, {256, 1},
                                   {512, 2}, {512, 1},  {512, 1}, {512, 1}, {512, 1},
                                   {512, 1}, {1024, 2}, {1024, 1}};
}  // namespace

DepthwiseSeparableBlock::DepthwiseSeparableBlock(int64_t in_channels, int64_t out_channels,
                                                 int64_t stride, Generator& gen) {
  conv1_ = &register_module(
      "conv1", std::make_unique<Conv2d>(
                   in_channels, in_channels, 3,
                   ops::Conv2dOptions{.stride = stride, .padding = 1, .groups = in_channels},
                   Bias::kNo, gen));
  bn1_ = &register_module("bn1", std::make_unique<BatchNorm2d>(in_channels));
  conv2_ = &register_module(
      "conv2",
      std::make_unique<Conv2d>(in_channels, out_channels, 1, ops::Conv2dOptions{}, Bias::kNo, gen));
  bn2_ = &register_module("bn2", std::make_unique<BatchNorm2d>(out_channels));
}

Tensor DepthwiseSeparableBlock::forward(const Tensor& x) {
  // dw -> bn -> relu -> pw -> bn -> relu; in inference one fused pass.
  return separable_conv_batch_norm(*conv1_, *bn1_, *conv2_, *bn2_, x);  // [N, out, H_out, W_out]
}

int64_t MobileNetV1::scaled_channels(int64_t base, float width) {
  return std::max<int64_t>(8, static_cast<int64_t>(std::floor(static_cast<double>(base) * width)));
}

MobileNetV1::MobileNetV1(const MobileNetV1Options& options, Generator& gen) : options_(options) {
  if (options.in_channels <= 0 || options.num_classes <= 0)
    throw UsageError("MobileNetV1: in_channels and num_classes must be positive");
  if (!(options.width > 0.f) || !std::isfinite(options.width))
    throw UsageError("MobileNetV1: width multiplier must be positive, got " +
                     std::to_string(options.width));
  if (options.first_stride != 1 && options.first_stride != 2)
    throw UsageError("MobileNetV1: first_stride must be 1 or 2, got " +
                     std::to_string(options.first_stride));

  int64_t channels = scaled_channels(32, options.width);
  conv1_ = &register_module(
      "conv1",
      std::make_unique<Conv2d>(options.in_channels, channels, 3,
                               ops::Conv2dOptions{.stride = options.first_stride, .padding = 1},
                               Bias::kNo, gen));
  bn1_ = &register_module("bn1", std::make_unique<BatchNorm2d>(channels));
  auto blocks = std::make_unique<Sequential>();
  for (const BlockSpec& b : kBlocks) {
    const int64_t out = scaled_channels(b.out_channels, options.width);
    blocks->push_back(std::make_unique<DepthwiseSeparableBlock>(channels, out, b.stride, gen));
    channels = out;
  }
  layers_ = &register_module("layers", std::move(blocks));
  linear_ = &register_module(
      "linear", std::make_unique<Linear>(channels, options.num_classes, Bias::kYes, gen));
}

Tensor MobileNetV1::forward(const Tensor& x) {
  Tensor out = conv_batch_norm(*conv1_, *bn1_, x, {.relu = true});  // [N, 32w, H, W] (stride 1)
  out = layers_->forward(out);                                      // [N, 1024w, H/16, W/16]
  return linear_->forward(ops::global_avg_pool2d(out));             // [N, 1024w] -> [N, classes]
}

}  // namespace spruce::models
