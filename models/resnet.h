// The CIFAR ResNet family of He et al. 2016 ("Deep Residual Learning", section
// 4.2): depth 6n + 2 (20, 32, 44, 56, 110), a 3x3 conv with 16 channels, three
// stages of n BasicBlocks with 16, 32 and 64 channels (the first block of
// stages 2 and 3 halves the resolution), global average pooling and a linear
// classifier.
//
// Parameter names follow the WoodFisher reference's PyTorch model
// (IST-DASLab/WoodFisher, models/resnet_cifar10.py) except that the
// projection is called "shortcut" (as in most CIFAR ResNet code) rather than
// "downsample": conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2},
// layer{2,3}.0.shortcut.{0 (1x1 conv), 1 (batch norm)} for option B, and the
// classifier "fc" (some repositories call it "linear").
//
// Shortcuts where the shape changes: option B (default, the reference's
// choice) a 1x1 stride-2 conv + batch norm; option A a parameter-free stride-2
// subsample with zero channel padding (ops::shortcut_pad). Elsewhere the
// shortcut is the identity. With 10 classes and 3 input channels ResNet-20 has
// 272,474 parameters with option B and 269,722 with option A.
//
// Initialisation follows the reference: every conv weight ~ normal(0,
// sqrt(2 / (k * k * out_channels))) (kaiming_normal_, fan_out), batch norm
// weight 1 and bias 0, the classifier keeps PyTorch's Linear default.
#pragma once

#include <cstdint>

#include "../core/random.h"
#include "../layers/batch_norm2d.h"
#include "../layers/conv2d.h"
#include "../layers/linear.h"
#include "../layers/module.h"
#include "../layers/sequential.h"

namespace spruce::models {

struct ResNetOptions {
  int64_t depth = 20;       // 6n + 2, n >= 1
  int64_t in_channels = 3;  // 1 (MNIST-like) or 3 (CIFAR)
  int64_t num_classes = 10;
  char shortcut = 'B';  // 'A' zero padding, 'B' 1x1 conv + batch norm
};

/// relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with 3x3 convs (no bias).
/// x [N, in_planes, H, W] -> [N, planes, H_out, W_out], H_out = ceil(H / stride).
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_planes, int64_t planes, int64_t stride, char shortcut, Generator& gen);

  Tensor forward(const Tensor& x) override;

  /// The channels an option-A shortcut pads to; 0 when the shortcut is the
  /// identity or a projection (child "shortcut"). For code that walks the
  /// model, such as the ONNX export.
  int64_t shortcut_pad_channels() const { return pad_to_channels_; }

 private:
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Conv2d* conv2_;
  BatchNorm2d* bn2_;
  Conv2d* shortcut_conv_ = nullptr;     // option B where the shape changes: "shortcut.0"
  BatchNorm2d* shortcut_bn_ = nullptr;  // and "shortcut.1"
  int64_t pad_to_channels_ = 0;         // option A where the shape changes; 0 = identity
};

/// x [N, in_channels, H, W] -> logits [N, num_classes]; any H, W >= 1 (the
/// global pool absorbs the final resolution, 8x8 for 32x32 input, 7x7 for 28x28).
class ResNet : public Module {
 public:
  explicit ResNet(const ResNetOptions& options, Generator& gen = default_generator());

  Tensor forward(const Tensor& x) override;

  const ResNetOptions& options() const { return options_; }

 private:
  ResNetOptions options_;
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Sequential* layer1_;
  Sequential* layer2_;
  Sequential* layer3_;
  Linear* fc_;
};

}  // namespace spruce::models
