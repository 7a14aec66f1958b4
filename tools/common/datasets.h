// Data sets by name for the tools: "fashion-mnist" (the default, from
// Debian's dataset-fashion-mnist), "mnist", "cifar10" and "folder" (an image
// folder with train/ and test/ sub-folders, one sub-folder per class in each),
// plus the standard transforms for each.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace spruce::cli {

/// The names accepted by --data.
const std::vector<std::string>& dataset_names();

/// The directory used when --data-dir is not given ("" when there is none).
std::string default_data_dir(const std::string& name);

/// Loads the training or test split. Errors name the file and, for
/// Fashion-MNIST, the Debian package to install.
std::shared_ptr<data::InMemoryDataset> load_dataset(const std::string& name, const std::string& dir,
                                                    bool train);

/// Per-channel normalisation for a data set (Fashion-MNIST's and CIFAR-10's
/// statistics; 0.5/0.5 for others).
std::shared_ptr<const data::Transform> normalization(const std::string& name, int64_t channels);

/// Training transforms, in the order that keeps padding equal to background:
/// random crop with zero padding on [0, 1] pixels, flip, then normalisation.
data::TransformList train_transforms(const std::string& name, int64_t channels,
                                     int64_t crop_padding, bool flip);
/// Evaluation transforms: normalisation only.
data::TransformList eval_transforms(const std::string& name, int64_t channels);

}  // namespace spruce::cli
