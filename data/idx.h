// IDX files (the MNIST / Fashion-MNIST format) and the datasets built on them.
//
// An IDX file is a big-endian header: two zero bytes, a type byte (0x08 =
// uint8), the number of dimensions, then one uint32 per dimension; then the
// data. Images are 0x00000803 [N, rows, cols], labels 0x00000801 [N]. Files
// may be plain or gzip-compressed (detected by the gzip magic 1f 8b, not by
// the name). Readers check the magic, check declared sizes against the bytes
// actually present before allocating, and report the file and the field.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataset.h"

namespace spruce::data {

/// Where the Debian package dataset-fashion-mnist installs the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
const std::vector<std::string>& fashion_mnist_class_names();

/// Pixels of an IDX image file: [count, rows, cols] uint8, row-major.
struct IdxImages {
  int64_t count = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> pixels;
};

/// Reads an image file (magic 0x00000803). FormatError / IoError name the file.
IdxImages read_idx_images(const std::string& path);
/// Reads a label file (magic 0x00000801): [count] uint8.
std::vector<uint8_t> read_idx_labels(const std::string& path);

/// Images + labels as a 1-channel dataset. Checks that the counts agree and
/// that every label is < class_names.size() (FormatError naming the file).
std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path,
                                                  const std::string& labels_path,
                                                  std::vector<std::string> class_names,
                                                  const std::string& name);

/// Fashion-MNIST from `dir`: {train,t10k}-{images-idx3,labels-idx1}-ubyte, each
/// plain or with a .gz suffix. 60000 training / 10000 test images of [1, 28, 28].
/// Missing files raise IoError telling how to install them.
std::shared_ptr<InMemoryDataset> load_fashion_mnist(const std::string& dir = kFashionMnistDir,
                                                    bool train = true);
/// MNIST digits from `dir`, same file names as Fashion-MNIST, classes "0".."9".
std::shared_ptr<InMemoryDataset> load_mnist(const std::string& dir, bool train = true);

}  // namespace spruce::data
