// Checkpoint container: bit-exact round trips, and every kind of damage
// (truncation, a flipped byte, wrong magic, a newer version, absurd lengths)
// reported as a FormatError naming the file; failed saves leave the previous
// file intact and no temporary behind.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/file.h"
#include "core/random.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace spruce;
using namespace spruce::io;
using namespace spruce::test;

namespace {

// Rewrites the trailing CRC so that a deliberately edited file passes it.
void fix_crc(std::vector<uint8_t>& bytes) {
  const uint32_t crc = crc32_update(0, {bytes.data(), bytes.size() - 4});
  std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

Checkpoint sample() {
  Generator gen(7);
  Checkpoint c;
  c.set_meta("model", "resnet20");
  c.set_meta("config", "lr=0.1\nmomentum=0.9\n");
  c.set_meta("empty", "");
  c.set_meta("binary", std::string("a\0b\xff", 4));
  c.set_tensor("scalar", Tensor::from_data({}, {3.5f}));
  c.set_tensor("vec",
               Tensor::from_data({3}, {-0.0f, std::numeric_limits<float>::denorm_min(), 1e30f}));
  c.set_tensor("conv.weight", Tensor::randn({2, 3, 4, 5}, gen));
  c.set_tensor("empty", Tensor::zeros({0, 3}));
  return c;
}

}  // namespace

TEST_CASE("checkpoint round trip keeps names, order, shapes, bits and metadata") {
  TempDir dir;
  const std::string p = dir.file("a.ckpt");
  const Checkpoint c = sample();
  save_checkpoint(p, c);
  const Checkpoint l = load_checkpoint(p);
  CHECK(l.source == p);
  REQUIRE(l.meta.size() == 4);
  for (size_t i = 0; i < c.meta.size(); ++i) {
    CHECK(l.meta[i].first == c.meta[i].first);
    CHECK(l.meta[i].second == c.meta[i].second);
  }
  CHECK(l.meta_value("binary").size() == 4);
  REQUIRE(l.tensors.size() == 4);
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    CHECK(l.tensors[i].first == c.tensors[i].first);
    CHECK(bit_equal(l.tensors[i].second, c.tensors[i].second));
    CHECK(!l.tensors[i].second.shares_storage_with(c.tensors[i].second));
  }
  CHECK(l.tensor("scalar").dim() == 0);
  CHECK(l.tensor("scalar").item() == 3.5f);
  CHECK(std::signbit(l.tensor("vec").at(0)));
  CHECK(l.tensor("conv.weight").shape() == Shape{2, 3, 4, 5});
  CHECK(dir.count() == 1);  // no temporary left behind
}

TEST_CASE("an empty checkpoint round-trips and set_* replaces in place") {
  TempDir dir;
  Checkpoint c;
  save_checkpoint(dir.file("e"), c);
  const Checkpoint l = load_checkpoint(dir.file("e"));
  CHECK(l.meta.empty());
  CHECK(l.tensors.empty());
  CHECK(std::filesystem::file_size(dir.file("e")) == 24);

  c.set_meta("epoch", "1");
  c.set_meta("step", "10");
  c.set_meta("epoch", "2");
  REQUIRE(c.meta.size() == 2);
  CHECK(c.meta[0].second == "2");
  c.set_tensor("w", Tensor::ones({2}));
  c.set_tensor("w", Tensor::zeros({3}));
  REQUIRE(c.tensors.size() == 1);
  CHECK(c.tensor("w").numel() == 3);
  CHECK(c.has_meta("step"));
  CHECK(!c.has_tensor("v"));
}

TEST_CASE("missing keys and tensors name the file") {
  TempDir dir;
  save_checkpoint(dir.file("a.ckpt"), sample());
  const Checkpoint l = load_checkpoint(dir.file("a.ckpt"));
  auto m = error_message<FormatError>([&] { l.meta_value("epoch"); });
  CHECK(m.find(dir.file("a.ckpt")) != std::string::npos);
  CHECK(m.find("'epoch'") != std::string::npos);
  m = error_message<FormatError>([&] { l.tensor("fc.bias"); });
  CHECK(m.find(dir.file("a.ckpt")) != std::string::npos);
  CHECK(m.find("'fc.bias'") != std::string::npos);
}

TEST_CASE("truncated files throw FormatError naming the file") {
  TempDir dir;
  const std::string p = dir.file("t.ckpt");
  save_checkpoint(p, sample());
  const auto full = read_bytes(p);
  for (size_t keep :
       {size_t{0}, size_t{5}, size_t{11}, size_t{20}, full.size() / 2, full.size() - 1}) {
    CAPTURE(keep);
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(keep)));
    const auto m = error_message<FormatError>([&] { load_checkpoint(p); });
    CHECK(m.find(p) != std::string::npos);
  }
}

TEST_CASE("a truncated checkpoint says so, with the sizes, rather than CRC mismatch") {
  TempDir dir;
  const std::string p = dir.file("t.ckpt");
  save_checkpoint(p, sample());
  const auto full = read_bytes(p);
  const std::string has = " bytes, file has ";
  // Every cut from the smallest checkpoint size on: inside the metadata, a
  // tensor's name, shape or data, or the CRC.
  for (size_t keep = 24; keep < full.size(); ++keep) {
    CAPTURE(keep);
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(keep)));
    const auto m = error_message<FormatError>([&] { load_checkpoint(p); });
    CHECK(m.find(p + ": truncated: expected ") != std::string::npos);
    CHECK(m.find(has + std::to_string(keep)) != std::string::npos);
    CHECK(m.find("CRC") == std::string::npos);
  }
  // The last tensor is empty, so a cut inside the CRC leaves every length
  // field whole: the expected size is then exact.
  write_bytes(p, std::vector<uint8_t>(full.begin(), full.end() - 3));
  CHECK(error_message<FormatError>([&] { load_checkpoint(p); }) ==
        p + ": truncated: expected " + std::to_string(full.size()) + has +
            std::to_string(full.size() - 3));
  // Shorter than the fixed fields.
  write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + 20));
  CHECK(error_message<FormatError>([&] { load_checkpoint(p); }) ==
        p + ": truncated: expected at least 24" + has + "20");
  // Cut in the middle: a lower bound.
  write_bytes(
      p, std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(full.size() / 2)));
  CHECK(error_message<FormatError>([&] {
          load_checkpoint(p);
        }).find(": truncated: expected at least ") != std::string::npos);
}

TEST_CASE("a flipped payload byte is a CRC mismatch") {
  TempDir dir;
  const std::string p = dir.file("c.ckpt");
  save_checkpoint(p, sample());
  auto bytes = read_bytes(p);
  bytes[bytes.size() - 40] ^= 0x01;  // inside the last tensor's data
  write_bytes(p, bytes);
  const auto m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("CRC mismatch: file is corrupted") != std::string::npos);
}

TEST_CASE("wrong magic and a future version are named as such") {
  TempDir dir;
  const std::string p = dir.file("m.ckpt");
  save_checkpoint(p, sample());
  auto bytes = read_bytes(p);

  auto bad = bytes;
  bad[0] = 'X';
  write_bytes(p, bad);
  auto m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("not a spruce checkpoint") != std::string::npos);
  CHECK(m.find("XPRUCECK") != std::string::npos);

  bad = bytes;
  const uint32_t v = 7;
  std::memcpy(bad.data() + 8, &v, 4);
  fix_crc(bad);
  write_bytes(p, bad);
  m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("written by a newer spruce (version 7, this build reads up to 1)") !=
        std::string::npos);
}

TEST_CASE("length fields claiming 2^40 bytes are rejected before allocating") {
  TempDir dir;
  const std::string p = dir.file("l.ckpt");
  Checkpoint c;
  c.set_meta("k", "value");
  c.set_tensor("w", Tensor::ones({2, 2}));
  save_checkpoint(p, c);
  const auto bytes = read_bytes(p);
  const uint64_t huge = uint64_t{1} << 40;

  // Metadata value length: magic 8, version 4, count 4, key length 4, key 1.
  auto bad = bytes;
  std::memcpy(bad.data() + 21, &huge, 8);
  fix_crc(bad);
  write_bytes(p, bad);
  auto m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("1099511627776") != std::string::npos);
  CHECK(m.find("value of metadata 'k'") != std::string::npos);

  // Tensor dimension: after the metadata (21 + 8 + 5), count 4, name length
  // 4, name 1, ndim 4, then the first dim.
  bad = bytes;
  std::memcpy(bad.data() + 34 + 13, &huge, 8);
  fix_crc(bad);
  write_bytes(p, bad);
  m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("tensor 'w'") != std::string::npos);

  // Tensor count.
  bad = bytes;
  const uint32_t many = 0xffffffffu;
  std::memcpy(bad.data() + 34, &many, 4);
  fix_crc(bad);
  write_bytes(p, bad);
  m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find("tensor count 4294967295") != std::string::npos);

  // A negative dimension.
  bad = bytes;
  const int64_t neg = -2;
  std::memcpy(bad.data() + 34 + 13, &neg, 8);
  fix_crc(bad);
  write_bytes(p, bad);
  m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find("is -2 (expected >= 0)") != std::string::npos);
}

TEST_CASE("an empty shape whose other dims overflow int64 is rejected") {
  TempDir dir;
  const std::string p = dir.file("o.ckpt");
  Checkpoint c;
  c.set_tensor("e", Tensor::zeros({0, 1, 1}));
  save_checkpoint(p, c);
  auto bytes = read_bytes(p);
  // No metadata: tensor count at 16, name length 20, name 24, ndim 25, dims 29, 37, 45.
  const int64_t big = int64_t{1} << 40;
  std::memcpy(bytes.data() + 37, &big, 8);
  std::memcpy(bytes.data() + 45, &big, 8);
  fix_crc(bytes);
  write_bytes(p, bytes);
  const auto m = error_message<FormatError>([&] { load_checkpoint(p); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(m.find("[0, 1099511627776, 1099511627776] has more elements than int64") !=
        std::string::npos);
}

TEST_CASE("reading a missing file is an IoError") {
  TempDir dir;
  const auto m = error_message<IoError>([&] { load_checkpoint(dir.file("none.ckpt")); });
  CHECK(m.find(dir.file("none.ckpt")) != std::string::npos);
  CHECK_THROWS_AS(load_checkpoint(dir.path().string()), IoError);
}

TEST_CASE("saving into a missing directory throws IoError and leaves no temporary") {
  TempDir dir;
  const std::string p = dir.file("nope/a.ckpt");
  const auto m = error_message<IoError>([&] { save_checkpoint(p, sample()); });
  CHECK(m.find(p) != std::string::npos);
  CHECK(dir.count() == 0);
}

TEST_CASE("a save that fails midway leaves the previous checkpoint intact") {
  TempDir dir;
  const std::string p = dir.file("run.ckpt");
  Checkpoint first;
  first.set_meta("epoch", "1");
  first.set_tensor("w", Tensor::full({100}, 1.f));
  save_checkpoint(p, first);
  const auto before = read_bytes(p);

  Checkpoint second;
  second.set_meta("epoch", "2");
  second.set_tensor("w", Tensor::full({1000}, 2.f));
  for (int64_t fail_at : {0, 10, 100, 3000}) {
    CAPTURE(fail_at);
    inject_write_failure_after(fail_at);
    const auto m = error_message<IoError>([&] { save_checkpoint(p, second); });
    CHECK(m.find(p) != std::string::npos);
    CHECK(read_bytes(p) == before);
    CHECK(dir.count() == 1);
    CHECK(load_checkpoint(p).meta_value("epoch") == "1");
  }
  // The injection applies to one file only: the next save succeeds.
  save_checkpoint(p, second);
  CHECK(load_checkpoint(p).meta_value("epoch") == "2");
  CHECK(load_checkpoint(p).tensor("w").at(999) == 2.f);
}

TEST_CASE("duplicate names and undefined tensors are usage errors and write nothing") {
  TempDir dir;
  Checkpoint c;
  c.meta = {{"a", "1"}, {"a", "2"}};
  CHECK_THROWS_AS(save_checkpoint(dir.file("d"), c), UsageError);
  c.meta.clear();
  c.tensors = {{"w", Tensor::ones({1})}, {"w", Tensor::ones({1})}};
  CHECK_THROWS_AS(save_checkpoint(dir.file("d"), c), UsageError);
  c.tensors = {{"w", Tensor()}};
  CHECK_THROWS_AS(save_checkpoint(dir.file("d"), c), UsageError);
  CHECK(dir.count() == 0);
}
