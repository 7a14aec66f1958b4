// Per-image transforms applied by the DataLoader to the float batch.
//
// A transform changes one image [C, H, W] in place (shape preserved). It is
// const and holds no state: all randomness comes from the Generator passed
// in, which the loader seeds per sample from (seed, epoch, position), so a
// run repeats bit for bit whatever thread builds the batch. Transforms run in
// list order; the usual training list is RandomCrop, RandomHorizontalFlip,
// Normalize (pad with zeros = black before normalising, as torchvision does).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/random.h"
#include "dataset.h"

namespace spruce::data {

class Transform {
 public:
  virtual ~Transform() = default;
  /// Transforms `image` ([C, H, W] of `shape`) in place, drawing from `gen` only.
  virtual void apply(std::span<float> image, const ImageShape& shape, Generator& gen) const = 0;
  /// UsageError when the transform cannot handle images of `shape`.
  virtual void check(const ImageShape& shape) const;
  /// Description for logs: "normalize(mean=[...], std=[...])".
  virtual std::string describe() const = 0;
};

using TransformList = std::vector<std::shared_ptr<const Transform>>;

/// x[c] <- (x[c] - mean[c]) / std[c]. One value broadcasts to every channel.
class Normalize final : public Transform {
 public:
  /// std values must be > 0; sizes must be equal (UsageError otherwise).
  Normalize(std::vector<float> mean, std::vector<float> stddev);
  /// Fashion-MNIST training set statistics: mean 0.2860, std 0.3530.
  static Normalize fashion_mnist();
  /// CIFAR-10 training set statistics per channel (R, G, B):
  /// mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
  static Normalize cifar10();

  void apply(std::span<float> image, const ImageShape& shape, Generator& gen) const override;
  void check(const ImageShape& shape) const override;
  std::string describe() const override;

  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& stddev() const { return std_; }

 private:
  std::vector<float> mean_;
  std::vector<float> std_;
};

/// Zero-pads by `padding` on every side and crops back to H x W at a random
/// offset: top and left each uniform in [0, 2 * padding].
class RandomCrop final : public Transform {
 public:
  explicit RandomCrop(int64_t padding);

  /// The deterministic core: out[c][y][x] = in[c][y + top - padding][x + left - padding],
  /// 0 outside the image. top, left in [0, 2 * padding].
  static void crop(std::span<float> image, const ImageShape& shape, int64_t padding, int64_t top,
                   int64_t left);

  void apply(std::span<float> image, const ImageShape& shape, Generator& gen) const override;
  std::string describe() const override;
  int64_t padding() const { return padding_; }

 private:
  int64_t padding_;
};

/// Mirrors the image left-right with probability p (always one uniform draw).
class RandomHorizontalFlip final : public Transform {
 public:
  explicit RandomHorizontalFlip(float p = 0.5f);

  /// The deterministic core: reverses every row.
  static void flip(std::span<float> image, const ImageShape& shape);

  void apply(std::span<float> image, const ImageShape& shape, Generator& gen) const override;
  std::string describe() const override;

 private:
  float p_;
};

/// Normalisation only (evaluation, Fisher collection).
TransformList eval_transforms(const Normalize& normalize);
/// RandomCrop(padding) when padding > 0, RandomHorizontalFlip when flip, then normalize.
TransformList train_transforms(const Normalize& normalize, int64_t padding, bool flip);

}  // namespace spruce::data
