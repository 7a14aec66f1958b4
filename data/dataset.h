// Dataset: a fixed, indexable collection of labelled images.
//
// Every reader in data/ (IDX, CIFAR-10, image folder) produces an
// InMemoryDataset, which keeps the pixels as uint8 (a quarter of the float
// size: Fashion-MNIST is 47 MB instead of 188 MB) and turns them into floats
// in [0, 1] (pixel / 255) only when a sample is read, i.e. when batching.
// SubsetDataset is a view on some indices of another dataset (validation
// splits, Fisher samples). All accessors are const and thread-safe, so the
// DataLoader's prefetch thread can read while the training thread waits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace spruce::data {

/// Shape of one image, channel-major: [C, H, W].
struct ImageShape {
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;

  int64_t numel() const { return channels * height * width; }
  /// "[C, H, W]" for messages.
  std::string str() const;
  bool operator==(const ImageShape&) const = default;
};

/// One sample: image [C, H, W] with values in [0, 1], and its class index.
struct Example {
  Tensor image;
  int32_t label = 0;
};

/// The interface every dataset implements. Implementations must be safe to
/// read from several threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;

  /// Number of samples.
  virtual int64_t size() const = 0;
  /// Shape shared by all images.
  virtual ImageShape image_shape() const = 0;
  /// One name per class; labels index into it.
  virtual const std::vector<std::string>& class_names() const = 0;
  int64_t num_classes() const { return static_cast<int64_t>(class_names().size()); }
  /// Label of sample i, in [0, num_classes()).
  virtual int32_t label(int64_t i) const = 0;
  /// Writes image i as floats pixel / 255 into `out` ([C, H, W], numel of image_shape()).
  virtual void read_image(int64_t i, std::span<float> out) const = 0;
  /// Short description for messages and reports ("fashion-mnist train").
  virtual std::string name() const = 0;

  /// Sample i as a tensor [C, H, W] plus its label (UsageError when i is out of range).
  Example get(int64_t i) const;

 protected:
  /// Throws UsageError when i is not in [0, size()).
  void check_index(int64_t i) const;
};

/// Images held as uint8 [N, C, H, W] with int32 labels.
class InMemoryDataset final : public Dataset {
 public:
  /// pixels: N * shape.numel() bytes, image after image, each channel-major.
  /// labels: N values in [0, class_names.size()). Inconsistent sizes or labels
  /// throw UsageError (readers validate files first and report FormatError).
  InMemoryDataset(std::string name, ImageShape shape, std::vector<std::string> class_names,
                  std::vector<uint8_t> pixels, std::vector<int32_t> labels);

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  ImageShape image_shape() const override { return shape_; }
  const std::vector<std::string>& class_names() const override { return class_names_; }
  int32_t label(int64_t i) const override;
  void read_image(int64_t i, std::span<float> out) const override;
  std::string name() const override { return name_; }

  /// The raw bytes of image i ([C, H, W]).
  std::span<const uint8_t> pixels(int64_t i) const;
  const std::vector<int32_t>& labels() const { return labels_; }

 private:
  std::string name_;
  ImageShape shape_;
  std::vector<std::string> class_names_;
  std::vector<uint8_t> pixels_;  // [N, C, H, W]
  std::vector<int32_t> labels_;  // [N]
};

/// The samples base[indices[0]], base[indices[1]], ... (indices may repeat).
class SubsetDataset final : public Dataset {
 public:
  /// Every index must be in [0, base->size()) (UsageError otherwise).
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices);

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  ImageShape image_shape() const override { return base_->image_shape(); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  int32_t label(int64_t i) const override;
  void read_image(int64_t i, std::span<float> out) const override;
  std::string name() const override;

  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

}  // namespace spruce::data
