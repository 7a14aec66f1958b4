// CIFAR ResNet: BasicBlock and the 3-stage network, composed from layers/.
#include "resnet.h"

#include <memory>
#include <string>

#include "../core/error.h"
#include "../core/ops/pooling.h"
#include "../core/ops/shortcut.h"
#include "../layers/conv_batch_norm.h"
#include "../layers/init.h"

namespace spruce::models {
namespace {
/// A bias-free conv with the reference's kaiming_normal_ (fan_out) weights.
std::unique_ptr<Conv2d> conv_no_bias(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                     int64_t padding, Generator& gen) {
  auto conv = std::make_unique<Conv2d>(
      in, out, kernel, ops::Conv2dOptions{.stride = stride, .padding = padding}, Bias::kNo, gen);
  init::kaiming_normal_(conv->weight(), gen, init::FanMode::kFanOut);
  return conv;
}
}  // namespace

BasicBlock::BasicBlock(int64_t in_planes, int64_t planes, int64_t stride, char shortcut,
                       Generator& gen) {
  if (shortcut != 'A' && shortcut != 'B')
    throw UsageError(std::string("BasicBlock: shortcut must be 'A' or 'B', got '") + shortcut +
                     "'");
  conv1_ = &register_module("conv1", conv_no_bias(in_planes, planes, 3, stride, 1, gen));
  bn1_ = &register_module("bn1", std::make_unique<BatchNorm2d>(planes));
  conv2_ = &register_module("conv2", conv_no_bias(planes, planes, 3, 1, 1, gen));
  bn2_ = &register_module("bn2", std::make_unique<BatchNorm2d>(planes));
  if (stride == 1 && in_planes == planes) return;
  if (shortcut == 'B') {
    auto proj = std::make_unique<Sequential>();
    shortcut_conv_ = &proj->push_back(conv_no_bias(in_planes, planes, 1, stride, 0, gen));
    shortcut_bn_ = &proj->push_back(std::make_unique<BatchNorm2d>(planes));
    register_module("shortcut", std::move(proj));
    return;
  }
  if (stride != 2 || (planes - in_planes) % 2 != 0 || planes < in_planes)
    throw UsageError(
        "BasicBlock: option-A shortcut needs stride 2 and an even channel increase, got " +
        std::to_string(in_planes) + " -> " + std::to_string(planes) + " at stride " +
        std::to_string(stride));
  pad_to_channels_ = planes;
}

Tensor BasicBlock::forward(const Tensor& x) {
  const Tensor residual = shortcut_conv_     ? conv_batch_norm(*shortcut_conv_, *shortcut_bn_, x)
                          : pad_to_channels_ ? ops::shortcut_pad(x, pad_to_channels_)
                                             : x;
  // relu(bn2(conv2(relu(bn1(conv1(x))))) + residual), [N, planes, H_out, W_out];
  // in inference the two convs run as one fused pair where they can.
  return conv_pair_batch_norm(*conv1_, *bn1_, *conv2_, *bn2_, x, residual);
}

ResNet::ResNet(const ResNetOptions& options, Generator& gen) : options_(options) {
  if (options.depth < 8 || (options.depth - 2) % 6 != 0)
    throw UsageError("ResNet: depth must be 6n + 2 (20, 32, 44, 56, 110), got " +
                     std::to_string(options.depth));
  if (options.in_channels <= 0 || options.num_classes <= 0)
    throw UsageError("ResNet: in_channels and num_classes must be positive");
  if (options.shortcut != 'A' && options.shortcut != 'B')
    throw UsageError(std::string("ResNet: shortcut must be 'A' or 'B', got '") + options.shortcut +
                     "'");
  const int64_t n = (options.depth - 2) / 6;

  conv1_ = &register_module("conv1", conv_no_bias(options.in_channels, 16, 3, 1, 1, gen));
  bn1_ = &register_module("bn1", std::make_unique<BatchNorm2d>(16));
  int64_t in_planes = 16;
  Sequential** stages[3] = {&layer1_, &layer2_, &layer3_};
  for (int s = 0; s < 3; ++s) {
    const int64_t planes = int64_t{16} << s;
    auto stage = std::make_unique<Sequential>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t stride = (s > 0 && i == 0) ? 2 : 1;
      stage->push_back(
          std::make_unique<BasicBlock>(in_planes, planes, stride, options.shortcut, gen));
      in_planes = planes;
    }
    *stages[s] = &register_module("layer" + std::to_string(s + 1), std::move(stage));
  }
  fc_ = &register_module("fc", std::make_unique<Linear>(64, options.num_classes, Bias::kYes, gen));
}

Tensor ResNet::forward(const Tensor& x) {
  Tensor out = conv_batch_norm(*conv1_, *bn1_, x, {.relu = true});  // [N, 16, H, W]
  out = layer1_->forward(out);                                      // [N, 16, H, W]
  out = layer2_->forward(out);                                      // [N, 32, H/2, W/2]
  out = layer3_->forward(out);                                      // [N, 64, H/4, W/4]
  return fc_->forward(ops::global_avg_pool2d(out));                 // [N, 64] -> [N, classes]
}

}  // namespace spruce::models
