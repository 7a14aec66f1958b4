// CIFAR-10 binary batch reader and loader (see cifar10.h).
#include "cifar10.h"

#include <filesystem>
#include <fstream>
#include <utility>

#include "../core/error.h"
#include "byte_source.h"

namespace spruce::data {
namespace {

constexpr int64_t kPixelBytes = kCifar10RecordBytes - 1;  // [3, 32, 32]
constexpr int kClasses = 10;

const char* kHint =
    "get the CIFAR-10 binary version (cifar-10-binary.tar.gz), unpack it and pass --data-dir";

// The folder holding the batch files: dir itself, or the archive's sub-folder.
std::filesystem::path batch_dir(const std::string& dir, const std::string& first_file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / first_file, ec)) return dir;
  const fs::path nested = fs::path(dir) / "cifar-10-batches-bin";
  if (fs::is_regular_file(nested / first_file, ec)) return nested;
  throw IoError("cifar10: cannot find " + (fs::path(dir) / first_file).string() + " (nor in " +
                nested.string() + "); " + kHint);
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return names;
}

void read_cifar10_batch(const std::string& path, std::vector<uint8_t>& pixels,
                        std::vector<int32_t>& labels) {
  ByteSource src(path);
  std::vector<uint8_t> raw;
  if (src.known_size() >= 0) {
    // Size check before allocating anything.
    const int64_t size = src.known_size();
    if (size == 0 || size % kCifar10RecordBytes != 0) {
      throw FormatError(path + ": file size " + std::to_string(size) +
                        " bytes is not a positive multiple of the CIFAR-10 record size " +
                        std::to_string(kCifar10RecordBytes) + " (1 label + 3072 pixel bytes)");
    }
    raw = src.read_vector(size, "CIFAR-10 records");
  } else {
    raw = src.read_to_end();
    const auto size = static_cast<int64_t>(raw.size());
    if (size == 0 || size % kCifar10RecordBytes != 0) {
      throw FormatError(path + ": uncompressed size " + std::to_string(size) +
                        " bytes is not a positive multiple of the CIFAR-10 record size " +
                        std::to_string(kCifar10RecordBytes) + " (1 label + 3072 pixel bytes)");
    }
  }
  const int64_t records = static_cast<int64_t>(raw.size()) / kCifar10RecordBytes;
  pixels.reserve(pixels.size() + static_cast<size_t>(records * kPixelBytes));
  labels.reserve(labels.size() + static_cast<size_t>(records));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = raw.data() + r * kCifar10RecordBytes;
    if (rec[0] >= kClasses) {
      throw FormatError(path + ": label " + std::to_string(rec[0]) + " of record " +
                        std::to_string(r) + " (byte offset " +
                        std::to_string(r * kCifar10RecordBytes) +
                        ") is out of range, expected 0.." + std::to_string(kClasses - 1));
    }
    labels.push_back(rec[0]);
    pixels.insert(pixels.end(), rec + 1, rec + kCifar10RecordBytes);
  }
}

std::vector<std::string> read_cifar10_meta(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(path + ": cannot open for reading");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const size_t e = line.find_last_not_of(" \t\r");
    names.push_back(line.substr(b, e - b + 1));
  }
  if (in.bad()) throw IoError(path + ": read error");
  if (names.size() != kClasses) {
    throw FormatError(path + ": " + std::to_string(names.size()) +
                      " class names (non-empty lines), expected " + std::to_string(kClasses));
  }
  return names;
}

std::shared_ptr<InMemoryDataset> load_cifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train) {
    for (int b = 1; b <= 5; ++b) files.push_back("data_batch_" + std::to_string(b) + ".bin");
  } else {
    files.push_back("test_batch.bin");
  }
  const std::filesystem::path folder = batch_dir(dir, files.front());
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  for (const std::string& f : files) {
    const std::filesystem::path p = folder / f;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) {
      throw IoError("cifar10: cannot find " + p.string() + "; " + kHint);
    }
    read_cifar10_batch(p.string(), pixels, labels);
  }
  const std::filesystem::path meta = folder / "batches.meta.txt";
  std::error_code ec;
  std::vector<std::string> names = std::filesystem::is_regular_file(meta, ec)
                                       ? read_cifar10_meta(meta.string())
                                       : cifar10_class_names();
  return std::make_shared<InMemoryDataset>(train ? "cifar10 train" : "cifar10 test",
                                           ImageShape{3, 32, 32}, std::move(names),
                                           std::move(pixels), std::move(labels));
}

}  // namespace spruce::data
