// Normalize, RandomCrop and RandomHorizontalFlip (see transforms.h).
#include "transforms.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "../core/error.h"

namespace spruce::data {
namespace {

std::string list_str(const std::vector<float>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%g", i ? ", " : "", static_cast<double>(v[i]));
    s += buf;
  }
  return s + "]";
}

void check_span(std::span<float> image, const ImageShape& shape, const char* who) {
  if (static_cast<int64_t>(image.size()) != shape.numel()) {
    throw UsageError(std::string(who) + ": image of " + std::to_string(image.size()) +
                     " floats does not match shape " + shape.str());
  }
}

}  // namespace

void Transform::check(const ImageShape&) const {}

// ---- Normalize ----

Normalize::Normalize(std::vector<float> mean, std::vector<float> stddev)
    : mean_(std::move(mean)), std_(std::move(stddev)) {
  if (mean_.empty() || mean_.size() != std_.size()) {
    throw UsageError("normalize: " + std::to_string(mean_.size()) + " mean values and " +
                     std::to_string(std_.size()) + " std values, expected equal non-zero counts");
  }
  for (float s : std_) {
    if (!(s > 0.f)) throw UsageError("normalize: std " + list_str(std_) + " must be > 0");
  }
}

Normalize Normalize::fashion_mnist() { return Normalize({0.2860f}, {0.3530f}); }

Normalize Normalize::cifar10() {
  return Normalize({0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f});
}

void Normalize::check(const ImageShape& shape) const {
  if (mean_.size() != 1 && static_cast<int64_t>(mean_.size()) != shape.channels) {
    throw UsageError("normalize: " + std::to_string(mean_.size()) +
                     " mean/std values for images of " + shape.str() + ", expected " +
                     (shape.channels == 1 ? "1" : "1 or " + std::to_string(shape.channels)));
  }
}

void Normalize::apply(std::span<float> image, const ImageShape& shape, Generator&) const {
  check_span(image, shape, "normalize");
  check(shape);
  const int64_t plane = shape.height * shape.width;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const size_t k = mean_.size() == 1 ? 0 : static_cast<size_t>(c);
    const float m = mean_[k], s = std_[k];
    float* x = image.data() + c * plane;
    for (int64_t i = 0; i < plane; ++i) x[i] = (x[i] - m) / s;
  }
}

std::string Normalize::describe() const {
  return "normalize(mean=" + list_str(mean_) + ", std=" + list_str(std_) + ")";
}

// ---- RandomCrop ----

RandomCrop::RandomCrop(int64_t padding) : padding_(padding) {
  if (padding < 0) {
    throw UsageError("random crop: padding " + std::to_string(padding) + ", expected >= 0");
  }
}

void RandomCrop::crop(std::span<float> image, const ImageShape& shape, int64_t padding, int64_t top,
                      int64_t left) {
  check_span(image, shape, "random crop");
  if (top < 0 || top > 2 * padding || left < 0 || left > 2 * padding) {
    throw UsageError("random crop: offset (" + std::to_string(top) + ", " + std::to_string(left) +
                     ") outside [0, " + std::to_string(2 * padding) + "]");
  }
  const int64_t H = shape.height, W = shape.width;
  const int64_t dy = top - padding, dx = left - padding;  // shift of the source window
  if (dy == 0 && dx == 0) return;
  std::vector<float> src(image.begin(), image.end());
  for (int64_t c = 0; c < shape.channels; ++c) {
    const float* in = src.data() + c * H * W;
    float* out = image.data() + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + dy;
      float* row = out + y * W;
      if (sy < 0 || sy >= H) {
        std::fill(row, row + W, 0.f);
        continue;
      }
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = x + dx;
        row[x] = (sx >= 0 && sx < W) ? in[sy * W + sx] : 0.f;
      }
    }
  }
}

void RandomCrop::apply(std::span<float> image, const ImageShape& shape, Generator& gen) const {
  const auto range = static_cast<uint64_t>(2 * padding_ + 1);
  const auto top = static_cast<int64_t>(gen.below(range));
  const auto left = static_cast<int64_t>(gen.below(range));
  crop(image, shape, padding_, top, left);
}

std::string RandomCrop::describe() const {
  return "random_crop(padding=" + std::to_string(padding_) + ")";
}

// ---- RandomHorizontalFlip ----

RandomHorizontalFlip::RandomHorizontalFlip(float p) : p_(p) {
  if (!(p >= 0.f && p <= 1.f)) {
    throw UsageError("random horizontal flip: p = " + std::to_string(p) + ", expected in [0, 1]");
  }
}

void RandomHorizontalFlip::flip(std::span<float> image, const ImageShape& shape) {
  check_span(image, shape, "horizontal flip");
  const int64_t rows = shape.channels * shape.height;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = image.data() + r * shape.width;
    std::reverse(row, row + shape.width);
  }
}

void RandomHorizontalFlip::apply(std::span<float> image, const ImageShape& shape,
                                 Generator& gen) const {
  // Draw even when p is 0 or 1, so the stream position never depends on p.
  if (gen.uniform() < p_) flip(image, shape);
}

std::string RandomHorizontalFlip::describe() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "random_horizontal_flip(p=%g)", static_cast<double>(p_));
  return buf;
}

TransformList eval_transforms(const Normalize& normalize) {
  return {std::make_shared<Normalize>(normalize)};
}

TransformList train_transforms(const Normalize& normalize, int64_t padding, bool flip) {
  TransformList list;
  if (padding > 0) list.push_back(std::make_shared<RandomCrop>(padding));
  if (flip) list.push_back(std::make_shared<RandomHorizontalFlip>());
  list.push_back(std::make_shared<Normalize>(normalize));
  return list;
}

}  // namespace spruce::data
