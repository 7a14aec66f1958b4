// Compact checkpoints (core/io/sparse_checkpoint.h): bit-exact round trip of
// sparse, 0/1, dense, empty and odd-sized tensors (-0.0 and NaN included),
// and one-line errors naming the file, the tensor and the field for every
// kind of damage the container's CRC cannot catch (a file written with a
// valid CRC but wrong parts), plus truncation, which it does.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/sparse_checkpoint.h"
#include "tests/test_util.h"

using namespace spruce;

namespace {

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<size_t>(a.numel())) == 0;
}

/// The message of the FormatError that loading and expanding `path` throws.
std::string load_error(const std::string& path) {
  try {
    io::expand_checkpoint(io::load_checkpoint(path));
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

io::Checkpoint sample() {
  io::Checkpoint c;
  c.set_meta("model.name", "test");
  Tensor w = Tensor::zeros({5, 7, 3});
  w.data()[0] = 1.5f, w.data()[33] = -0.f, w.data()[104] = std::numeric_limits<float>::quiet_NaN();
  Tensor mask = Tensor::zeros({70});
  for (int64_t i = 0; i < 70; i += 9) mask.data()[i] = 1.f;
  c.set_tensor("w", w);
  c.set_tensor("mask", mask);
  c.set_tensor("dense", Tensor::from_data({3}, {1.f, 2.f, 3.f}));
  c.set_tensor("empty", Tensor::zeros({0, 4}));
  c.set_tensor("scalar", Tensor::from_data({}, {0.f}));
  return c;
}

}  // namespace

TEST_CASE("compact checkpoint round trip is bit-exact") {
  test::TempDir dir;
  const io::Checkpoint c = sample();
  const io::Checkpoint packed = io::compress_checkpoint(c);
  CHECK(io::is_compressed(packed));
  CHECK(packed.has_tensor("sparse.bits/w"));
  CHECK(packed.has_tensor("sparse.values/w"));
  CHECK(packed.has_tensor("sparse.bits/mask"));
  CHECK_FALSE(packed.has_tensor("sparse.values/mask"));  // all ones: bits alone
  CHECK(packed.has_tensor("dense"));                     // not smaller as bits
  io::save_checkpoint(dir.file("c.ckpt"), packed);
  const io::Checkpoint back = io::expand_checkpoint(io::load_checkpoint(dir.file("c.ckpt")));
  CHECK_FALSE(io::is_compressed(back));
  CHECK(back.meta_value("model.name") == "test");
  for (const auto& [name, t] : c.tensors) {
    INFO(name);
    CHECK(bit_equal(back.tensor(name), t));
  }
}

TEST_CASE("damaged compact checkpoints fail with one-line errors naming file and field") {
  test::TempDir dir;
  const io::Checkpoint good = io::compress_checkpoint(sample());
  struct Damage {
    const char* what;
    void (*apply)(io::Checkpoint&);
    const char* expect;
  };
  const Damage damages[] = {
      {"format", [](io::Checkpoint& c) { c.set_meta("sparse.format", "9"); }, "sparse.format"},
      {"shape text", [](io::Checkpoint& c) { c.set_meta("sparse.shape/w", "5 x 3"); },
       "tensor 'w': shape"},
      {"negative dim", [](io::Checkpoint& c) { c.set_meta("sparse.shape/w", "5 -7 3"); },
       "tensor 'w': shape"},
      {"overflow",
       [](io::Checkpoint& c) { c.set_meta("sparse.shape/w", "1 4294967296 4294967296"); },
       "overflows"},
      {"shape too big for the bits",
       [](io::Checkpoint& c) { c.set_meta("sparse.shape/w", "5 7 30"); },
       "tensor 'w': bitmask has"},
      {"missing shape",
       [](io::Checkpoint& c) {
         std::erase_if(c.meta, [](auto& kv) { return kv.first == "sparse.shape/w"; });
       },
       "sparse.shape/w' is missing"},
      {"bit past the end",
       [](io::Checkpoint& c) {
         Tensor bits = c.tensor("sparse.bits/mask").clone();
         uint32_t last;
         std::memcpy(&last, bits.data() + 2, 4);
         last |= 1u << 31;  // element 95 of 70
         std::memcpy(bits.data() + 2, &last, 4);
         c.set_tensor("sparse.bits/mask", bits);
       },
       "tensor 'mask': bitmask marks a position past"},
      {"value count",
       [](io::Checkpoint& c) { c.set_tensor("sparse.values/w", Tensor::zeros({2})); },
       "tensor 'w': 2 values for 3 set bits"},
      {"orphan values",
       [](io::Checkpoint& c) { c.set_tensor("sparse.values/nothing", Tensor::zeros({1})); },
       "values without a bitmask"},
      {"unknown part",
       [](io::Checkpoint& c) { c.set_tensor("sparse.other/w", Tensor::zeros({1})); },
       "unknown sparse part"},
      {"twice", [](io::Checkpoint& c) { c.set_tensor("w", Tensor::zeros({1})); },
       "tensor 'w' is stored twice"},
  };
  for (const Damage& d : damages) {
    INFO(d.what);
    io::Checkpoint bad = good;
    d.apply(bad);
    const std::string path = dir.file("bad.ckpt");
    io::save_checkpoint(path, bad);
    const std::string msg = load_error(path);
    CHECK(msg.find(path) == 0);
    CHECK_MESSAGE(msg.find(d.expect) != std::string::npos, msg);
    CHECK(msg.find('\n') == std::string::npos);
  }
  // Truncation is the container's to catch, naming the file.
  io::save_checkpoint(dir.file("t.ckpt"), good);
  std::vector<uint8_t> bytes = test::read_bytes(dir.file("t.ckpt"));
  bytes.resize(bytes.size() - 20);
  test::write_bytes(dir.file("t.ckpt"), bytes);
  const std::string msg = load_error(dir.file("t.ckpt"));
  CHECK(msg.find(dir.file("t.ckpt")) == 0);
  CHECK_MESSAGE(msg.find("truncated") != std::string::npos, msg);
}
