// IDX readers and the (Fashion-)MNIST loaders (see idx.h).
#include "idx.h"

#include <cstdio>
#include <filesystem>
#include <utility>

#include "../core/error.h"
#include "byte_source.h"

namespace spruce::data {
namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

uint32_t big_endian_u32(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

// Reads and checks the magic and dimensions of an IDX file of uint8 data with
// `ndims` dimensions, and checks the declared data size against the bytes the
// file holds (when known). Returns the dimensions.
std::vector<int64_t> read_header(ByteSource& src, uint32_t ndims, const std::string& kind) {
  const uint32_t expected_magic = 0x00000800u | ndims;
  const std::string& path = src.path();
  if (src.known_size() == 0) {
    throw FormatError(path + ": file is empty (0 bytes), expected an IDX " + kind +
                      " file starting with magic " + hex32(expected_magic));
  }
  unsigned char raw[4];
  src.read_exact(raw, 4, "the IDX magic number");
  const uint32_t magic = big_endian_u32(raw);
  if (magic != expected_magic) {
    std::string hint;
    if (magic == 0x00000801u) hint = " (this is an IDX label file)";
    if (magic == 0x00000803u) hint = " (this is an IDX image file)";
    throw FormatError(path + ": magic number " + hex32(magic) + hint + ", expected " +
                      hex32(expected_magic) + " for an IDX " + kind + " file (uint8, " +
                      std::to_string(ndims) + (ndims == 1 ? " dimension)" : " dimensions)"));
  }
  std::vector<int64_t> dims(ndims);
  uint64_t total = 1;
  for (uint32_t d = 0; d < ndims; ++d) {
    src.read_exact(raw, 4, "dimension " + std::to_string(d) + " of the IDX header");
    const uint32_t v = big_endian_u32(raw);
    if (v == 0) {
      throw FormatError(path + ": IDX dimension " + std::to_string(d) +
                        " is 0, expected at least 1");
    }
    dims[d] = v;
    // Three uint32 factors can overflow 64 bits: check instead of wrapping.
    if (__builtin_mul_overflow(total, uint64_t{v}, &total) || total > (uint64_t{1} << 62)) {
      throw FormatError(path + ": IDX dimensions declare more than 2^62 bytes of data");
    }
  }
  if (src.known_size() >= 0) {
    const auto present = static_cast<uint64_t>(src.known_size() - src.position());
    if (present != total) {
      std::string declared = std::to_string(dims[0]) + " " + kind + "s";
      if (ndims == 3) {
        declared += " of ";
        declared += std::to_string(dims[1]);
        declared += 'x';
        declared += std::to_string(dims[2]);
      }
      throw FormatError(path + ": header declares " + declared + " (" + std::to_string(total) +
                        " bytes of data) but the file holds " + std::to_string(present) +
                        " bytes after the " + std::to_string(src.position()) + "-byte header");
    }
  }
  return dims;
}

// Reads the data that follows the header and checks nothing trails it.
std::vector<uint8_t> read_body(ByteSource& src, int64_t bytes, const std::string& what) {
  std::vector<uint8_t> data = src.read_vector(bytes, what);
  if (!src.at_end()) {
    throw FormatError(src.path() + ": data continues after the " + std::to_string(src.position()) +
                      " bytes the IDX header declares, expected the file to end there");
  }
  return data;
}

// dir/name, else dir/name.gz; IoError with `hint` when neither exists.
std::string find_idx_file(const std::string& dir, const std::string& name,
                          const std::string& dataset, const std::string& hint) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path plain = fs::path(dir) / name;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  const fs::path gz = fs::path(dir) / (name + ".gz");
  if (fs::is_regular_file(gz, ec)) return gz.string();
  throw IoError(dataset + ": cannot find " + plain.string() + " or " + gz.string() + "; " + hint);
}

std::shared_ptr<InMemoryDataset> load_idx_pair(const std::string& dir, bool train,
                                               std::vector<std::string> class_names,
                                               const std::string& dataset,
                                               const std::string& hint) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images = find_idx_file(dir, prefix + "-images-idx3-ubyte", dataset, hint);
  const std::string labels = find_idx_file(dir, prefix + "-labels-idx1-ubyte", dataset, hint);
  return load_idx_dataset(images, labels, std::move(class_names),
                          dataset + (train ? " train" : " test"));
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

IdxImages read_idx_images(const std::string& path) {
  ByteSource src(path);
  const std::vector<int64_t> dims = read_header(src, 3, "image");
  IdxImages out;
  out.count = dims[0];
  out.rows = dims[1];
  out.cols = dims[2];
  out.pixels = read_body(src, out.count * out.rows * out.cols,
                         "the pixels of " + std::to_string(out.count) + " images");
  return out;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  ByteSource src(path);
  const std::vector<int64_t> dims = read_header(src, 1, "label");
  return read_body(src, dims[0], std::to_string(dims[0]) + " labels");
}

std::shared_ptr<InMemoryDataset> load_idx_dataset(const std::string& images_path,
                                                  const std::string& labels_path,
                                                  std::vector<std::string> class_names,
                                                  const std::string& name) {
  if (class_names.empty()) throw UsageError(name + ": no class names, expected at least one");
  // Labels first, range included: a bad label file fails before the large
  // image file is read.
  const std::vector<uint8_t> raw_labels = read_idx_labels(labels_path);
  std::vector<int32_t> labels(raw_labels.size());
  for (size_t i = 0; i < raw_labels.size(); ++i) {
    if (raw_labels[i] >= class_names.size()) {
      throw FormatError(labels_path + ": label " + std::to_string(raw_labels[i]) + " at index " +
                        std::to_string(i) + " is out of range, expected 0.." +
                        std::to_string(class_names.size() - 1) + " (" +
                        std::to_string(class_names.size()) + " classes)");
    }
    labels[i] = raw_labels[i];
  }
  IdxImages images = read_idx_images(images_path);
  if (images.count != static_cast<int64_t>(labels.size())) {
    throw FormatError(labels_path + ": holds " + std::to_string(labels.size()) + " labels but " +
                      images_path + " holds " + std::to_string(images.count) +
                      " images, expected equal counts");
  }
  return std::make_shared<InMemoryDataset>(name, ImageShape{1, images.rows, images.cols},
                                           std::move(class_names), std::move(images.pixels),
                                           std::move(labels));
}

std::shared_ptr<InMemoryDataset> load_fashion_mnist(const std::string& dir, bool train) {
  return load_idx_pair(dir, train, fashion_mnist_class_names(), "fashion-mnist",
                       "install the Debian package dataset-fashion-mnist (apt-get install "
                       "dataset-fashion-mnist) or pass --data-dir");
}

std::shared_ptr<InMemoryDataset> load_mnist(const std::string& dir, bool train) {
  std::vector<std::string> digits;
  for (int d = 0; d < 10; ++d) digits.push_back(std::to_string(d));
  return load_idx_pair(dir, train, std::move(digits), "mnist",
                       "pass --data-dir with the MNIST IDX files (plain or .gz)");
}

}  // namespace spruce::data
