// Dataset, InMemoryDataset and SubsetDataset: see dataset.h.
#include "dataset.h"

#include <utility>

#include "../core/error.h"

namespace spruce::data {

std::string ImageShape::str() const {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "[" + to_string().
  std::string s = "[";
  s += std::to_string(channels);
  s += ", ";
  s += std::to_string(height);
  s += ", ";
  s += std::to_string(width);
  s += "]";
  return s;
}

Example Dataset::get(int64_t i) const {
  check_index(i);
  const ImageShape shape = image_shape();
  Tensor image = Tensor::empty({shape.channels, shape.height, shape.width});
  read_image(i, image.span());
  return {image, label(i)};
}

void Dataset::check_index(int64_t i) const {
  if (i < 0 || i >= size()) {
    throw UsageError(name() + ": sample index " + std::to_string(i) +
                     " is out of range, expected 0.." + std::to_string(size() - 1));
  }
}

InMemoryDataset::InMemoryDataset(std::string name, ImageShape shape,
                                 std::vector<std::string> class_names, std::vector<uint8_t> pixels,
                                 std::vector<int32_t> labels)
    : name_(std::move(name)),
      shape_(shape),
      class_names_(std::move(class_names)),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)) {
  if (shape_.channels <= 0 || shape_.height <= 0 || shape_.width <= 0) {
    throw UsageError(name_ + ": image shape " + shape_.str() +
                     " is invalid, expected positive sizes");
  }
  if (class_names_.empty()) throw UsageError(name_ + ": no class names, expected at least one");
  const auto expected =
      static_cast<uint64_t>(labels_.size()) * static_cast<uint64_t>(shape_.numel());
  if (pixels_.size() != expected) {
    throw UsageError(name_ + ": " + std::to_string(pixels_.size()) + " pixel bytes for " +
                     std::to_string(labels_.size()) + " images of " + shape_.str() + ", expected " +
                     std::to_string(expected));
  }
  const auto classes = static_cast<int32_t>(class_names_.size());
  for (size_t i = 0; i < labels_.size(); ++i) {
    if (labels_[i] < 0 || labels_[i] >= classes) {
      throw UsageError(name_ + ": label " + std::to_string(labels_[i]) + " of sample " +
                       std::to_string(i) + " is out of range, expected 0.." +
                       std::to_string(classes - 1));
    }
  }
}

int32_t InMemoryDataset::label(int64_t i) const {
  check_index(i);
  return labels_[static_cast<size_t>(i)];
}

std::span<const uint8_t> InMemoryDataset::pixels(int64_t i) const {
  check_index(i);
  const auto n = static_cast<size_t>(shape_.numel());
  return {pixels_.data() + static_cast<size_t>(i) * n, n};
}

void InMemoryDataset::read_image(int64_t i, std::span<float> out) const {
  const std::span<const uint8_t> src = pixels(i);
  if (out.size() != src.size()) {
    throw UsageError(name_ + ": read_image buffer holds " + std::to_string(out.size()) +
                     " floats, expected " + std::to_string(src.size()) + " for " + shape_.str());
  }
  // Multiplying by 1/255 would differ from pixel / 255 in the last bit for some
  // pixels; division keeps values identical to torchvision's ToTensor.
  for (size_t k = 0; k < src.size(); ++k) out[k] = static_cast<float>(src[k]) / 255.f;
}

SubsetDataset::SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  if (!base_) throw UsageError("subset: base dataset is null");
  const int64_t n = base_->size();
  for (size_t k = 0; k < indices_.size(); ++k) {
    if (indices_[k] < 0 || indices_[k] >= n) {
      throw UsageError("subset of " + base_->name() + ": index " + std::to_string(indices_[k]) +
                       " at position " + std::to_string(k) + " is out of range, expected 0.." +
                       std::to_string(n - 1));
    }
  }
}

int32_t SubsetDataset::label(int64_t i) const {
  check_index(i);
  return base_->label(indices_[static_cast<size_t>(i)]);
}

void SubsetDataset::read_image(int64_t i, std::span<float> out) const {
  check_index(i);
  base_->read_image(indices_[static_cast<size_t>(i)], out);
}

std::string SubsetDataset::name() const {
  return base_->name() + " subset of " + std::to_string(indices_.size());
}

}  // namespace spruce::data
