// Initialisers; each draws its values in storage order from the generator.
#include "init.h"

#include <cmath>

#include "../core/error.h"

namespace spruce::init {
namespace {
int64_t receptive_field(const Tensor& w) {
  if (w.dim() < 2)
    throw UsageError("fan of a tensor with fewer than 2 dimensions: " + shape_str(w.shape()));
  int64_t r = 1;
  for (int64_t d = 2; d < w.dim(); ++d) r *= w.size(d);
  return r;
}

int64_t fan(const Tensor& w, FanMode mode) {
  return mode == FanMode::kFanIn ? fan_in(w) : fan_out(w);
}
}  // namespace

int64_t fan_in(const Tensor& weight) { return weight.size(1) * receptive_field(weight); }

int64_t fan_out(const Tensor& weight) { return weight.size(0) * receptive_field(weight); }

void uniform_(Tensor t, float lo, float hi, Generator& gen) {
  for (float& v : t.span()) v = gen.uniform(lo, hi);
}

void normal_(Tensor t, float mean, float std, Generator& gen) {
  for (float& v : t.span()) v = mean + std * gen.normal();
}

void kaiming_uniform_(Tensor weight, Generator& gen, double a, FanMode mode) {
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const auto bound =
      static_cast<float>(gain * std::sqrt(3.0 / static_cast<double>(fan(weight, mode))));
  uniform_(weight, -bound, bound, gen);
}

void kaiming_normal_(Tensor weight, Generator& gen, FanMode mode) {
  const auto std = static_cast<float>(std::sqrt(2.0 / static_cast<double>(fan(weight, mode))));
  normal_(weight, 0.f, std, gen);
}

void default_weight_and_bias_(Tensor weight, Tensor bias, Generator& gen) {
  kaiming_uniform_(weight, gen, std::sqrt(5.0));
  if (bias.defined()) {
    const auto bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in(weight))));
    uniform_(bias, -bound, bound, gen);
  }
}

}  // namespace spruce::init
