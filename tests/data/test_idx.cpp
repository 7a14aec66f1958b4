// IDX reader: plain and gzip round trips on tiny files written here, and the
// validation errors (magic, truncation, lying headers, count and label checks).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/idx.h"
#include "data_test_util.h"

using namespace spruce;
using namespace spruce::data;
using namespace spruce::data::test;

namespace {

// 3 images of 2 x 3 with distinct pixel values 0, 7, 14, ..., 112 and 255 last.
std::vector<uint8_t> tiny_pixels() {
  std::vector<uint8_t> p(3 * 2 * 3);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(i * 7 + (i == 17 ? 136 : 0));
  return p;
}
const std::vector<uint8_t> kLabels = {0, 9, 4};

void check_tiny(const InMemoryDataset& ds) {
  REQUIRE(ds.size() == 3);
  CHECK(ds.image_shape() == ImageShape{1, 2, 3});
  CHECK(ds.num_classes() == 10);
  const std::vector<uint8_t> px = tiny_pixels();
  for (int64_t i = 0; i < 3; ++i) {
    const Example ex = ds.get(i);
    CHECK(ex.label == kLabels[static_cast<size_t>(i)]);
    REQUIRE(ex.image.shape() == Shape{1, 2, 3});
    for (int64_t k = 0; k < 6; ++k) {
      const uint8_t raw = px[static_cast<size_t>(i * 6 + k)];
      CHECK(ds.pixels(i)[static_cast<size_t>(k)] == raw);
      CHECK(ex.image.at(k) == static_cast<float>(raw) / 255.f);
    }
  }
  // The last pixel is 17 * 7 + 136 = 255: the top of the range maps to exactly 1.
  CHECK(ds.get(2).image.at(5) == 1.f);
  CHECK(ds.get(0).image.at(0) == 0.f);
}

}  // namespace

TEST_CASE("idx: plain files round trip") {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(3, 2, 3, tiny_pixels()));
  write_bytes(dir.file("lbl"), idx_labels(3, kLabels));
  const IdxImages images = read_idx_images(dir.file("img"));
  CHECK(images.count == 3);
  CHECK(images.rows == 2);
  CHECK(images.cols == 3);
  CHECK(images.pixels == tiny_pixels());
  CHECK(read_idx_labels(dir.file("lbl")) == kLabels);
  check_tiny(
      *load_idx_dataset(dir.file("img"), dir.file("lbl"), fashion_mnist_class_names(), "tiny"));
}

TEST_CASE("idx: gzip files round trip, found by load_fashion_mnist") {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_images(3, 2, 3, tiny_pixels()));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_labels(3, kLabels));
  // The gzip magic decides, not the name: a plain file named .gz would read as plain.
  CHECK(read_idx_images(dir.file("train-images-idx3-ubyte.gz")).pixels == tiny_pixels());
  auto ds = load_fashion_mnist(dir.path().string(), true);
  check_tiny(*ds);
  CHECK(ds->class_names()[0] == "T-shirt/top");
  CHECK(ds->class_names()[9] == "Ankle boot");
  CHECK(ds->name() == "fashion-mnist train");

  // Test split, plain files, preferred over nothing else being there.
  write_bytes(dir.file("t10k-images-idx3-ubyte"), idx_images(1, 1, 2, {10, 20}));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx_labels(1, {8}));
  auto test = load_fashion_mnist(dir.path().string(), false);
  REQUIRE(test->size() == 1);
  CHECK(test->label(0) == 8);
  CHECK(test->get(0).image.at(1) == 20.f / 255.f);
}

TEST_CASE("idx: missing files say how to install them") {
  TempDir dir;
  const std::string msg = error_message<IoError>([&] { load_fashion_mnist(dir.path().string()); });
  CHECK(contains(msg, "train-images-idx3-ubyte"));
  CHECK(contains(msg, "apt-get install dataset-fashion-mnist"));
  CHECK(contains(msg, "--data-dir"));
}

TEST_CASE("idx: wrong magic") {
  TempDir dir;
  const std::string f = dir.file("bad-magic");
  write_bytes(f, idx_images(3, 2, 3, tiny_pixels(), 0x00000903u));
  const std::string msg = error_message<FormatError>([&] { read_idx_images(f); });
  CHECK(contains(msg, f));
  CHECK(contains(msg, "0x00000903"));
  CHECK(contains(msg, "0x00000803"));
  // A label file given as images is recognised as such.
  write_bytes(f, idx_labels(3, kLabels));
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(f); }), "label file"));
}

TEST_CASE("idx: truncated files, plain and gzip") {
  TempDir dir;
  std::vector<uint8_t> short_pixels = tiny_pixels();
  short_pixels.resize(10);  // 18 declared
  const std::string plain = dir.file("short");
  write_bytes(plain, idx_images(3, 2, 3, short_pixels));
  std::string msg = error_message<FormatError>([&] { read_idx_images(plain); });
  CHECK(contains(msg, plain));
  CHECK(contains(msg, "10 bytes"));

  const std::string gz = dir.file("short.gz");
  write_gz(gz, idx_images(3, 2, 3, short_pixels));
  msg = error_message<FormatError>([&] { read_idx_images(gz); });
  CHECK(contains(msg, gz));
  CHECK(contains(msg, "26 bytes"));  // 16 header + 10 pixel bytes present

  // A header cut inside the dimensions.
  const std::string header = dir.file("header");
  std::vector<uint8_t> bytes = idx_images(3, 2, 3, {});
  bytes.resize(9);
  write_bytes(header, bytes);
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(header); }), header));

  // A gzip stream cut in the middle of its compressed data.
  const std::string cut = dir.file("cut.gz");
  write_gz(cut, idx_images(3, 2, 3, tiny_pixels()));
  std::vector<uint8_t> compressed = read_bytes(cut);
  compressed.resize(compressed.size() - 12);
  write_bytes(cut, compressed);
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(cut); }), cut));
}

TEST_CASE("idx: a flipped header byte is a wrong magic or a size mismatch") {
  TempDir dir;
  const std::vector<uint8_t> good = idx_images(3, 2, 3, tiny_pixels());
  const std::string f = dir.file("flipped");
  // Byte 2 of the magic (the data type): 0x08 -> 0x09.
  std::vector<uint8_t> bytes = good;
  bytes[2] ^= 0x01;
  write_bytes(f, bytes);
  std::string msg = error_message<FormatError>([&] { read_idx_images(f); });
  CHECK(contains(msg, f + ": magic number 0x00000903"));
  // The low byte of the row count: 2 -> 3 rows declared, data for 2.
  bytes = good;
  bytes[11] ^= 0x01;
  write_bytes(f, bytes);
  msg = error_message<FormatError>([&] { read_idx_images(f); });
  CHECK(contains(msg, f + ": header declares 3 images of 3x3 (27 bytes of data)"));
  CHECK(contains(msg, "holds 18 bytes"));
  // The same flip inside a gzip file: the size is unknown up front, so the
  // data runs out while reading.
  write_gz(f + ".gz", bytes);
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(f + ".gz"); }), f + ".gz: "));
}

TEST_CASE("idx: a header declaring 2^31 images is rejected without allocating") {
  TempDir dir;
  const std::string plain = dir.file("huge");
  write_bytes(plain, idx_images(0x80000000u, 28, 28, tiny_pixels()));
  std::string msg = error_message<FormatError>([&] { read_idx_images(plain); });
  CHECK(contains(msg, plain));
  CHECK(contains(msg, "2147483648 images of 28x28"));
  // gzip: the size is unknown up front, so reading stops when the data ends.
  const std::string gz = dir.file("huge.gz");
  write_gz(gz, idx_images(0x80000000u, 28, 28, tiny_pixels()));
  msg = error_message<FormatError>([&] { read_idx_images(gz); });
  CHECK(contains(msg, gz));
  // Dimensions whose product overflows 64 bits.
  write_bytes(plain, idx_images(0xffffffffu, 0xffffffffu, 0xffffffffu, {}));
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(plain); }), plain));
  // Labels too.
  write_bytes(plain, idx_labels(0x80000000u, kLabels));
  CHECK(contains(error_message<FormatError>([&] { read_idx_labels(plain); }), plain));
}

TEST_CASE("idx: data after the declared size is rejected") {
  TempDir dir;
  const std::string plain = dir.file("long");
  write_bytes(plain, idx_labels(2, kLabels));
  CHECK(contains(error_message<FormatError>([&] { read_idx_labels(plain); }), plain));
  const std::string gz = dir.file("long.gz");
  write_gz(gz, idx_labels(2, kLabels));
  CHECK(contains(error_message<FormatError>([&] { read_idx_labels(gz); }), gz));
}

TEST_CASE("idx: image and label counts must agree") {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(3, 2, 3, tiny_pixels()));
  write_bytes(dir.file("lbl"), idx_labels(2, {1, 2}));
  const std::string msg = error_message<FormatError>([&] {
    load_idx_dataset(dir.file("img"), dir.file("lbl"), fashion_mnist_class_names(), "x");
  });
  CHECK(contains(msg, dir.file("lbl")));
  CHECK(contains(msg, "2 labels"));
  CHECK(contains(msg, "3 images"));
}

TEST_CASE("idx: labels must be below the number of classes") {
  TempDir dir;
  write_bytes(dir.file("img"), idx_images(3, 2, 3, tiny_pixels()));
  write_bytes(dir.file("lbl"), idx_labels(3, kLabels));
  // Label 9 is fine for 10 classes but not for 5.
  const std::vector<std::string> five = {"a", "b", "c", "d", "e"};
  const std::string msg = error_message<FormatError>(
      [&] { load_idx_dataset(dir.file("img"), dir.file("lbl"), five, "x"); });
  CHECK(contains(msg, dir.file("lbl")));
  CHECK(contains(msg, "label 9 at index 1"));
}

TEST_CASE("idx: zero-length and missing files") {
  TempDir dir;
  const std::string empty = dir.file("empty");
  write_bytes(empty, {});
  std::string msg = error_message<FormatError>([&] { read_idx_images(empty); });
  CHECK(contains(msg, empty));
  CHECK(contains(msg, "empty"));
  CHECK(contains(error_message<FormatError>([&] { read_idx_labels(empty); }), empty));
  // An empty gzip stream: 0 uncompressed bytes, caught while reading the magic.
  const std::string empty_gz = dir.file("empty.gz");
  write_gz(empty_gz, {});
  CHECK(contains(error_message<FormatError>([&] { read_idx_labels(empty_gz); }), empty_gz));
  const std::string missing = dir.file("missing");
  CHECK(contains(error_message<IoError>([&] { read_idx_labels(missing); }), missing));
}

TEST_CASE("idx: corrupt gzip data") {
  TempDir dir;
  const std::string gz = dir.file("corrupt.gz");
  std::vector<uint8_t> big(4096);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 31) ^ (i >> 3));
  write_gz(gz, idx_images(4, 32, 32, big));
  std::vector<uint8_t> bytes = read_bytes(gz);
  for (size_t i = 20; i < bytes.size() - 10; i += 7) bytes[i] ^= 0x5a;
  write_bytes(gz, bytes);
  CHECK(contains(error_message<FormatError>([&] { read_idx_images(gz); }), gz));
}
