// CIFAR-10 binary batches: records written here, checked for pixels, labels and
// channel order; invalid sizes, labels and meta files are rejected.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/cifar10.h"
#include "data_test_util.h"

using namespace spruce;
using namespace spruce::data;
using namespace spruce::data::test;

namespace {

// Pixel value of record r at channel c, row y, column x: different in every
// channel, row and column, so a transposed or interleaved read shows.
uint8_t pixel(int r, int c, int y, int x) {
  return static_cast<uint8_t>(r * 11 + c * 80 + y * 2 + x);
}

std::vector<uint8_t> records(const std::vector<uint8_t>& labels, int first_record = 0) {
  std::vector<uint8_t> out;
  for (size_t k = 0; k < labels.size(); ++k) {
    const int r = first_record + static_cast<int>(k);
    out.push_back(labels[k]);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) out.push_back(pixel(r, c, y, x));
  }
  return out;
}

void check_record(const Dataset& ds, int64_t i, int r, int32_t label) {
  const Example ex = ds.get(i);
  CHECK(ex.label == label);
  REQUIRE(ex.image.shape() == spruce::Shape{3, 32, 32});
  for (int c = 0; c < 3; ++c) {
    for (int y : {0, 5, 31}) {
      for (int x : {0, 17, 31}) {
        CHECK(ex.image.at(c * 1024 + y * 32 + x) == static_cast<float>(pixel(r, c, y, x)) / 255.f);
      }
    }
  }
}

}  // namespace

TEST_CASE("cifar10: test batch records, pixels, labels and channel order") {
  TempDir dir;
  write_bytes(dir.file("test_batch.bin"), records({0, 7, 9}));
  auto ds = load_cifar10(dir.path().string(), false);
  REQUIRE(ds->size() == 3);
  CHECK(ds->image_shape() == ImageShape{3, 32, 32});
  CHECK(ds->class_names() == cifar10_class_names());
  CHECK(ds->class_names()[1] == "automobile");
  check_record(*ds, 0, 0, 0);
  check_record(*ds, 1, 1, 7);
  check_record(*ds, 2, 2, 9);
  // Raw bytes: red plane first, then green, then blue.
  CHECK(ds->pixels(1)[0] == pixel(1, 0, 0, 0));
  CHECK(ds->pixels(1)[1024] == pixel(1, 1, 0, 0));
  CHECK(ds->pixels(1)[2048 + 33] == pixel(1, 2, 1, 1));
}

TEST_CASE("cifar10: five training batches in order, nested folder, meta names") {
  TempDir dir;
  const auto nested = dir.path() / "cifar-10-batches-bin";
  std::filesystem::create_directory(nested);
  for (int b = 1; b <= 5; ++b) {
    write_bytes((nested / ("data_batch_" + std::to_string(b) + ".bin")).string(),
                records({static_cast<uint8_t>(b)}, b));
  }
  write_bytes((nested / "batches.meta.txt").string(),
              {'a',  '\n', 'b',  '\n', 'c',  '\n', 'd', '\n', 'e',  '\n', 'f',  '\n', 'g',
               '\n', 'h',  '\n', 'i',  '\n', ' ',  'j', ' ',  '\r', '\n', '\n', '\n'});
  auto ds = load_cifar10(dir.path().string(), true);
  REQUIRE(ds->size() == 5);
  for (int b = 1; b <= 5; ++b) check_record(*ds, b - 1, b, b);
  CHECK(ds->class_names().front() == "a");
  CHECK(ds->class_names().back() == "j");  // trimmed; blank lines ignored

  // A meta file with 9 names is an error naming it.
  const std::string meta = (nested / "batches.meta.txt").string();
  write_bytes(meta, {'a', '\n', 'b', '\n'});
  CHECK(
      contains(error_message<FormatError>([&] { load_cifar10(dir.path().string(), true); }), meta));
  // A missing batch is an IoError naming it.
  std::filesystem::remove(nested / "data_batch_4.bin");
  CHECK(contains(error_message<IoError>([&] { load_cifar10(dir.path().string(), true); }),
                 "data_batch_4.bin"));
}

TEST_CASE("cifar10: size not a multiple of 3073, bad label, empty, missing") {
  TempDir dir;
  const std::string f = dir.file("batch.bin");
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;

  std::vector<uint8_t> bytes = records({1, 2});
  bytes.resize(bytes.size() - 1);
  write_bytes(f, bytes);
  std::string msg = error_message<FormatError>([&] { read_cifar10_batch(f, pixels, labels); });
  CHECK(contains(msg, f));
  CHECK(contains(msg, "6145"));
  CHECK(contains(msg, "3073"));

  write_bytes(f, records({1, 10, 2}));
  msg = error_message<FormatError>([&] { read_cifar10_batch(f, pixels, labels); });
  CHECK(contains(msg, f));
  CHECK(contains(msg, "label 10 of record 1"));

  write_bytes(f, {});
  CHECK(contains(error_message<FormatError>([&] { read_cifar10_batch(f, pixels, labels); }), f));

  CHECK(contains(error_message<IoError>([&] { load_cifar10(dir.path().string(), false); }),
                 "test_batch.bin"));

  // Appending: two reads accumulate.
  pixels.clear();
  labels.clear();
  write_bytes(f, records({3}));
  read_cifar10_batch(f, pixels, labels);
  read_cifar10_batch(f, pixels, labels);
  CHECK(labels == std::vector<int32_t>{3, 3});
  CHECK(pixels.size() == 2 * 3072);
}

TEST_CASE("cifar10: truncated gzip batch, another format, flipped label byte, short meta file") {
  TempDir dir;
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  const std::string gz = dir.file("batch.bin.gz");
  // Cut inside the compressed data: the stream ends early.
  std::vector<uint8_t> compressed = gzip(records({1, 2, 3}));
  compressed.resize(compressed.size() / 2);
  write_bytes(gz, compressed);
  CHECK(contains(error_message<FormatError>([&] { read_cifar10_batch(gz, pixels, labels); }),
                 gz + ": "));
  // A whole gzip stream one byte short of two records.
  std::vector<uint8_t> bytes = records({1, 2});
  bytes.pop_back();
  write_gz(gz, bytes);
  std::string msg = error_message<FormatError>([&] { read_cifar10_batch(gz, pixels, labels); });
  CHECK(contains(msg, gz + ": uncompressed size 6145 bytes"));
  // An IDX file given as a batch (CIFAR-10 batches have no magic: the size decides).
  const std::string idx = dir.file("images.idx");
  write_bytes(idx,
              std::vector<uint8_t>{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 9, 9, 9, 9});
  msg = error_message<FormatError>([&] { read_cifar10_batch(idx, pixels, labels); });
  CHECK(contains(msg, idx + ": file size 20 bytes is not a positive multiple"));
  // A flipped bit in a label byte (the record's header) puts it out of range.
  bytes = records({1, 2});
  bytes[kCifar10RecordBytes] ^= 0x80;
  write_bytes(dir.file("flipped.bin"), bytes);
  CHECK(contains(error_message<FormatError>(
                     [&] { read_cifar10_batch(dir.file("flipped.bin"), pixels, labels); }),
                 "label 130 of record 1"));
  // A meta file that does not match the 10 labels.
  const std::string meta = dir.file("batches.meta.txt");
  write_bytes(meta, {'c', 'a', 't', '\n', 'd', 'o', 'g', '\n'});
  CHECK(contains(error_message<FormatError>([&] { read_cifar10_meta(meta); }),
                 meta + ": 2 class names"));
}
