// Parameter initialisation, as in torch.nn.init, drawing from a spruce::Generator
// so the same seed gives the same weights on every machine.
//
// Fans follow PyTorch: for a weight [out, in, kh, kw] (or [out, in]),
// fan_in = in * kh * kw and fan_out = out * kh * kw; a grouped conv's weight
// already has in = in_channels / groups, so its fans come out right.
#pragma once

#include <cstdint>

#include "../core/random.h"
#include "../core/tensor.h"

namespace spruce::init {

/// Which fan a Kaiming initialisation preserves the variance of.
enum class FanMode { kFanIn, kFanOut };

/// in * kh * kw of a weight [out, in, kh, kw] or [out, in].
int64_t fan_in(const Tensor& weight);
/// out * kh * kw of a weight [out, in, kh, kw] or [out, in].
int64_t fan_out(const Tensor& weight);

/// Fills with uniform values in [lo, hi).
void uniform_(Tensor t, float lo, float hi, Generator& gen);
/// Fills with normal(mean, std) values.
void normal_(Tensor t, float mean, float std, Generator& gen);

/// torch.nn.init.kaiming_uniform_ with leaky-ReLU slope `a`: uniform in
/// [-b, b] with b = sqrt(6 / ((1 + a^2) fan)). PyTorch's default for Conv2d
/// and Linear weights is a = sqrt(5) with fan_in, i.e. b = 1 / sqrt(fan_in).
void kaiming_uniform_(Tensor weight, Generator& gen, double a, FanMode mode = FanMode::kFanIn);
/// torch.nn.init.kaiming_normal_ for ReLU: normal(0, sqrt(2 / fan)).
void kaiming_normal_(Tensor weight, Generator& gen, FanMode mode = FanMode::kFanIn);

/// PyTorch's default Conv2d / Linear initialisation: weight from
/// kaiming_uniform_(a = sqrt(5)), then bias (when defined) uniform in
/// [-1/sqrt(fan_in), 1/sqrt(fan_in)], in that order.
void default_weight_and_bias_(Tensor weight, Tensor bias, Generator& gen);

}  // namespace spruce::init
