// CIFAR-10 in its binary version (cifar-10-binary.tar.gz).
//
// Each batch file is a sequence of 3073-byte records: one label byte (0..9),
// then 3072 pixel bytes, 3 x 32 x 32 channel-major (all red, then green, then
// blue, each row-major) - already our [C, H, W] layout. data_batch_1..5.bin
// hold the 50000 training images, test_batch.bin the 10000 test images, and
// batches.meta.txt (optional) the class names, one per line.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataset.h"

namespace spruce::data {

/// Bytes of one record: 1 label + 3 * 32 * 32 pixels.
inline constexpr int64_t kCifar10RecordBytes = 3073;

/// airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
const std::vector<std::string>& cifar10_class_names();

/// Appends the records of one batch file to `pixels` ([N, 3, 32, 32] uint8)
/// and `labels`. FormatError when the size is not a positive multiple of 3073
/// or a label is >= 10; IoError when the file cannot be read.
void read_cifar10_batch(const std::string& path, std::vector<uint8_t>& pixels,
                        std::vector<int32_t>& labels);

/// Class names from a batches.meta.txt file (non-empty lines, exactly 10).
std::vector<std::string> read_cifar10_meta(const std::string& path);

/// CIFAR-10 from `dir` (or from dir/cifar-10-batches-bin, the folder the
/// archive unpacks to): data_batch_1..5.bin when `train`, else test_batch.bin.
/// Class names from batches.meta.txt when present, else the standard ones.
std::shared_ptr<InMemoryDataset> load_cifar10(const std::string& dir, bool train = true);

}  // namespace spruce::data
