// Data set lookup by name.
#include "tools/common/datasets.h"

#include <filesystem>

#include "core/error.h"
#include "data/cifar10.h"
#include "data/idx.h"
#include "data/image_folder.h"

namespace spruce::cli {

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> names{"fashion-mnist", "mnist", "cifar10", "folder"};
  return names;
}

std::string default_data_dir(const std::string& name) {
  if (name == "fashion-mnist") return data::kFashionMnistDir;
  return "";
}

std::shared_ptr<data::InMemoryDataset> load_dataset(const std::string& name,
                                                    const std::string& dir_arg, bool train) {
  const std::string dir = dir_arg.empty() ? default_data_dir(name) : dir_arg;
  if (dir.empty()) throw UsageError("--data " + name + " needs --data-dir");
  if (name == "fashion-mnist") return data::load_fashion_mnist(dir, train);
  if (name == "mnist") return data::load_mnist(dir, train);
  if (name == "cifar10") return data::load_cifar10(dir, train);
  if (name == "folder") {
    const std::string split = (std::filesystem::path(dir) / (train ? "train" : "test")).string();
    if (!std::filesystem::is_directory(split))
      throw IoError(split +
                    ": no such directory (an image folder data set needs train/ and test/ "
                    "sub-folders, each with one sub-folder per class)");
    return data::load_image_folder(split);
  }
  throw UsageError("unknown data set '" + name +
                   "', expected one of: fashion-mnist, mnist, cifar10, folder");
}

std::shared_ptr<const data::Transform> normalization(const std::string& name, int64_t channels) {
  if (name == "fashion-mnist" && channels == 1)
    return std::make_shared<data::Normalize>(data::Normalize::fashion_mnist());
  if (name == "mnist" && channels == 1)
    return std::make_shared<data::Normalize>(std::vector<float>{0.1307f},
                                             std::vector<float>{0.3081f});
  if (name == "cifar10" && channels == 3)
    return std::make_shared<data::Normalize>(data::Normalize::cifar10());
  return std::make_shared<data::Normalize>(std::vector<float>{0.5f}, std::vector<float>{0.5f});
}

data::TransformList train_transforms(const std::string& name, int64_t channels,
                                     int64_t crop_padding, bool flip) {
  data::TransformList list;
  if (crop_padding > 0) list.push_back(std::make_shared<data::RandomCrop>(crop_padding));
  if (flip) list.push_back(std::make_shared<data::RandomHorizontalFlip>());
  list.push_back(normalization(name, channels));
  return list;
}

data::TransformList eval_transforms(const std::string& name, int64_t channels) {
  return {normalization(name, channels)};
}

}  // namespace spruce::cli
