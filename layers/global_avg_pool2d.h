// GlobalAvgPool2d: the mean over all spatial positions of each channel, the
// classifier head of ResNet and MobileNet.
#pragma once

#include "module.h"

namespace spruce {

/// x [N, C, H, W] -> [N, C]. No parameters.
class GlobalAvgPool2d : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};

}  // namespace spruce
