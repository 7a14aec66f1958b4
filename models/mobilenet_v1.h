// MobileNetV1 (Howard et al. 2017) for small images: a 3x3 conv, 13
// depthwise-separable blocks, global average pooling and a linear classifier.
//
// Table 1 of the paper, with the first conv at stride 1 instead of 2 for
// 28-32 px inputs (so a 32x32 input ends at 2x2, a 28x28 one at 2x2 too):
//   conv1 3x3, 32 ch, stride 1
//   blocks (out channels / stride): 64/1, 128/2, 128/1, 256/2, 256/1, 512/2,
//   512/1 x5, 1024/2, 1024/1
// Each block is dw 3x3 conv (groups = channels) + bn + relu, then pw 1x1 conv
// + bn + relu; convs have no bias. Channels are scaled by the width
// multiplier as max(8, floor(c * width)), the WoodFisher reference's rule
// (IST-DASLab/WoodFisher, models/mobilenet.py).
//
// Parameter names follow the common PyTorch CIFAR MobileNet (kuangliu's
// pytorch-cifar, models/mobilenet.py): conv1, bn1, layers.{0..12}.{conv1 (dw),
// bn1, conv2 (pw), bn2}, and the classifier "linear" (kept for state_dict key
// parity with that model; the ResNets call theirs "fc").
// Initialisation is PyTorch's default for every layer, as in both references.
// With width 1.0, 10 classes and 3 input channels: 3,217,226 parameters.
#pragma once

#include <cstdint>

#include "../core/random.h"
#include "../layers/batch_norm2d.h"
#include "../layers/conv2d.h"
#include "../layers/linear.h"
#include "../layers/module.h"
#include "../layers/sequential.h"

namespace spruce::models {

struct MobileNetV1Options {
  int64_t in_channels = 3;
  int64_t num_classes = 10;
  float width = 1.f;         // channel multiplier, > 0
  int64_t first_stride = 1;  // 1 for 28-32 px inputs, 2 for ImageNet-sized ones
};

/// relu(bn2(conv2(relu(bn1(conv1(x)))))): conv1 depthwise 3x3 (stride, pad 1,
/// groups = in), conv2 pointwise 1x1.
/// x [N, in, H, W] -> [N, out, ceil(H / stride), ceil(W / stride)].
class DepthwiseSeparableBlock : public Module {
 public:
  DepthwiseSeparableBlock(int64_t in_channels, int64_t out_channels, int64_t stride,
                          Generator& gen);

  Tensor forward(const Tensor& x) override;

 private:
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Conv2d* conv2_;
  BatchNorm2d* bn2_;
};

/// x [N, in_channels, H, W] -> logits [N, num_classes].
class MobileNetV1 : public Module {
 public:
  explicit MobileNetV1(const MobileNetV1Options& options, Generator& gen = default_generator());

  Tensor forward(const Tensor& x) override;

  const MobileNetV1Options& options() const { return options_; }
  /// A base channel count scaled by the width multiplier: max(8, floor(c * width)).
  static int64_t scaled_channels(int64_t base, float width);

 private:
  MobileNetV1Options options_;
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Sequential* layers_;
  Linear* linear_;
};

}  // namespace spruce::models
