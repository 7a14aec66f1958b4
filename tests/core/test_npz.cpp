// .npz interchange: bit-exact round trips, interoperability with numpy in
// both directions (skipped when /usr/bin/python3 has no numpy), and damaged
// archives reported as FormatErrors naming the file and the entry.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/io/file.h"
#include "core/io/npz.h"
#include "core/random.h"
#include "tests/skip.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace spruce;
using namespace spruce::io;
using namespace spruce::test;

namespace {

template <class T>
T get(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}
template <class T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

// For an archive of one stored entry as write_npz makes it: recomputes the
// entry's CRC (in the local and the central header) after an edit.
void fix_single_entry_crc(std::vector<uint8_t>& b) {
  const size_t name_len = get<uint16_t>(b, 26);
  const size_t size = get<uint32_t>(b, 22);
  const uint32_t crc = crc32_update(0, {b.data() + 30 + name_len, size});
  put<uint32_t>(b, 14, crc);
  const size_t cd = get<uint32_t>(b, b.size() - 22 + 16);
  put<uint32_t>(b, cd + 16, crc);
}

// Replaces the first occurrence of `from` by `to` (same length) in the file.
void patch(std::vector<uint8_t>& b, const std::string& from, const std::string& to) {
  REQUIRE(from.size() == to.size());
  auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
  REQUIRE(it != b.end());
  std::copy(to.begin(), to.end(), it);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// value[k] = (k * 0.25 - 1.5) * scale: exact in float32, easy to recompute in numpy.
Tensor ramp(const Shape& shape, float scale) {
  Tensor t = Tensor::empty(shape);
  for (int64_t k = 0; k < t.numel(); ++k)
    t.data()[k] = (static_cast<float>(k) * 0.25f - 1.5f) * scale;
  return t;
}

bool have_numpy() {
  static const bool ok = std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
  return ok;
}

int run_python(const TempDir& dir, const std::string& script, const std::string& arg) {
  const std::string py = dir.file("check.py");
  std::ofstream(py) << script;
  const std::string cmd =
      "/usr/bin/python3 '" + py + "' '" + arg + "' >'" + dir.file("py.log") + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream log(dir.file("py.log"));
    MESSAGE(std::string(std::istreambuf_iterator<char>(log), {}));
  }
  return rc;
}

NamedTensors sample() {
  Generator gen(3);
  return {{"layer1.0.conv1.weight", ramp({4, 3, 3, 3}, 1.f)},
          {"fc.bias", ramp({10}, 2.f)},
          {"scalar", Tensor::from_data({}, {42.5f})},
          {"fc.weight", ramp({10, 7}, -0.5f)},
          {"empty", Tensor::zeros({0, 5})},
          {"noise", Tensor::randn({3, 2}, gen)}};
}

}  // namespace

TEST_CASE("npz round trip keeps order, names, shapes and bits") {
  TempDir dir;
  const auto in = sample();
  write_npz(dir.file("a.npz"), in);
  const auto out = read_npz(dir.file("a.npz"));
  REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    CAPTURE(in[i].first);
    CHECK(out[i].first == in[i].first);
    CHECK(bit_equal(out[i].second, in[i].second));
  }
  CHECK(out[2].second.dim() == 0);
  CHECK(out[2].second.item() == 42.5f);
  CHECK(dir.count() == 1);

  // A fixed timestamp makes the bytes reproducible.
  write_npz(dir.file("b.npz"), in);
  CHECK(read_bytes(dir.file("a.npz")) == read_bytes(dir.file("b.npz")));
}

TEST_CASE("npz entries are .npy 1.0 arrays with a 64-byte aligned header") {
  TempDir dir;
  write_npz(dir.file("h.npz"), {{"w", ramp({2, 3}, 1.f)}});
  const auto b = read_bytes(dir.file("h.npz"));
  CHECK(get<uint32_t>(b, 0) == 0x04034b50u);
  CHECK(get<uint16_t>(b, 8) == 0);  // stored
  const size_t name_len = get<uint16_t>(b, 26);
  CHECK(std::string(b.begin() + 30, b.begin() + 30 + static_cast<long>(name_len)) == "w.npy");
  const size_t npy = 30 + name_len;
  CHECK(std::memcmp(b.data() + npy, "\x93NUMPY\x01\x00", 8) == 0);
  const size_t header_len = get<uint16_t>(b, npy + 8);
  CHECK((10 + header_len) % 64 == 0);
  const std::string header(b.begin() + static_cast<long>(npy + 10),
                           b.begin() + static_cast<long>(npy + 10 + header_len));
  CHECK(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0) == 0);
  CHECK(header.back() == '\n');
  CHECK(get<uint32_t>(b, 22) == 10 + header_len + 6 * 4);
}

TEST_CASE("numpy.load reads what write_npz writes" *
          doctest::skip(skip_unless(have_numpy(), "/usr/bin/python3 has no numpy"))) {
  TempDir dir;
  write_npz(dir.file("ours.npz"), sample());
  const std::string script = R"(
import sys, numpy as np
z = np.load(sys.argv[1])
assert z.files == ['layer1.0.conv1.weight', 'fc.bias', 'scalar', 'fc.weight', 'empty', 'noise'], z.files
def ramp(shape, scale):
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.float32) * np.float32(0.25) - np.float32(1.5)) * np.float32(scale)).reshape(shape)
for name, shape, scale in [('layer1.0.conv1.weight', (4, 3, 3, 3), 1.0), ('fc.bias', (10,), 2.0),
                           ('fc.weight', (10, 7), -0.5)]:
    a = z[name]
    assert a.dtype == np.float32 and a.shape == shape, (name, a.dtype, a.shape)
    assert np.array_equal(a, ramp(shape, scale)), name
s = z['scalar']
assert s.shape == () and s.dtype == np.float32 and float(s) == 42.5
assert z['empty'].shape == (0, 5)
assert z['noise'].shape == (3, 2)
)";
  CHECK(run_python(dir, script, dir.file("ours.npz")) == 0);
}

TEST_CASE("read_npz reads numpy.savez and numpy.savez_compressed files" *
          doctest::skip(skip_unless(have_numpy(), "/usr/bin/python3 has no numpy"))) {
  TempDir dir;
  const std::string script = R"(
import sys, os, numpy as np
d = sys.argv[1]
arrays = {
    'layer1.0.conv1.weight': np.arange(24, dtype=np.float32).reshape(2, 3, 4) * np.float32(0.5),
    'f64': np.arange(5, dtype=np.float64) / 3.0,
    'fortran': np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
    'scalar': np.float32(-2.25),
}
assert arrays['fortran'].flags.f_contiguous and not arrays['fortran'].flags.c_contiguous
np.savez(os.path.join(d, 'plain.npz'), **arrays)
np.savez_compressed(os.path.join(d, 'compressed.npz'), **arrays)
# PyTorch state_dict dtypes: int64 counters, bool and uint8 masks; and
# big-endian data, and an int64 that float32 cannot hold.
np.savez(os.path.join(d, 'ints.npz'), i=np.arange(3), b=np.array([True, False, True]),
         u=np.array([0, 1, 255], dtype=np.uint8), be=np.array([1.5, -2.0], dtype='>f4'),
         i32=np.array([-7, 16777216], dtype=np.int32))
np.savez(os.path.join(d, 'huge.npz'), n=np.array([1, 2**53 + 1], dtype=np.int64))
np.savez(os.path.join(d, 'complex.npz'), c=np.zeros(2, dtype=np.complex64))
)";
  REQUIRE(run_python(dir, script, dir.path().string()) == 0);
  for (const char* file : {"plain.npz", "compressed.npz"}) {
    CAPTURE(file);
    const auto t = read_npz(dir.file(file));
    REQUIRE(t.size() == 4);
    CHECK(t[0].first == "layer1.0.conv1.weight");
    CHECK(t[0].second.shape() == Shape{2, 3, 4});
    for (int64_t k = 0; k < 24; ++k) CHECK(t[0].second.at(k) == static_cast<float>(k) * 0.5f);
    CHECK(t[1].first == "f64");
    REQUIRE(t[1].second.shape() == Shape{5});
    for (int64_t k = 0; k < 5; ++k) CHECK(t[1].second.at(k) == static_cast<float>(k / 3.0));
    CHECK(t[2].first == "fortran");
    REQUIRE(t[2].second.shape() == Shape{2, 3, 4});
    for (int64_t k = 0; k < 24; ++k) CHECK(t[2].second.at(k) == static_cast<float>(k));
    CHECK(t[3].first == "scalar");
    CHECK(t[3].second.dim() == 0);
    CHECK(t[3].second.item() == -2.25f);
  }
  const auto ints = read_npz(dir.file("ints.npz"));
  REQUIRE(ints.size() == 5);
  const std::vector<std::vector<float>> expected = {
      {0, 1, 2}, {1, 0, 1}, {0, 1, 255}, {1.5f, -2.f}, {-7, 16777216}};
  for (size_t i = 0; i < ints.size(); ++i) {
    CAPTURE(ints[i].first);
    REQUIRE(ints[i].second.numel() == static_cast<int64_t>(expected[i].size()));
    for (size_t k = 0; k < expected[i].size(); ++k)
      CHECK(ints[i].second.at(static_cast<int64_t>(k)) == expected[i][k]);
  }
  const auto m = error_message<FormatError>([&] { read_npz(dir.file("huge.npz")); });
  CHECK(m.find(dir.file("huge.npz")) != std::string::npos);
  CHECK(m.find("entry 'n.npy': element 1 of dtype '<i8' is 9007199254740993, which float32 cannot "
               "hold exactly") != std::string::npos);
  const auto c = error_message<FormatError>([&] { read_npz(dir.file("complex.npz")); });
  CHECK(c.find("entry 'c.npy': dtype '<c8' is not supported") != std::string::npos);
}

TEST_CASE("damaged archives throw FormatError naming the file and the entry") {
  TempDir dir;
  const std::string good = dir.file("good.npz");
  const std::string p = dir.file("bad.npz");
  write_npz(good, {{"w", ramp({2, 3}, 1.f)}});
  const auto bytes = read_bytes(good);

  auto expect_error = [&](const std::vector<uint8_t>& b, const std::string& needle) {
    write_bytes(p, b);
    const auto m = error_message<FormatError>([&] { read_npz(p); });
    CAPTURE(m);
    CHECK(m.find(p) != std::string::npos);
    CHECK(m.find(needle) != std::string::npos);
  };

  SUBCASE("truncated") {
    for (size_t keep : {size_t{0}, size_t{10}, size_t{100}, bytes.size() - 1})
      expect_error(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(keep)),
                   "");
  }
  SUBCASE("flipped data byte") {
    auto b = bytes;
    b[30 + 5 + 128 + 3] ^= 0x10;  // inside the float data
    expect_error(b, "entry 'w.npy': CRC mismatch");
  }
  SUBCASE("not a zip file") {
    expect_error(std::vector<uint8_t>(100, 'x'), "not a ZIP/.npz archive");
  }
  SUBCASE("unsupported dtype") {
    auto b = bytes;
    patch(b, "'<f4'", "'<U4'");
    fix_single_entry_crc(b);
    expect_error(
        b, "entry 'w.npy': dtype '<U4' is not supported (expected a float, integer or bool dtype");
  }
  SUBCASE("bool that is neither 0 nor 1") {
    auto b = bytes;
    patch(b, "'<f4'", "'|b1'");
    patch(b, "(2, 3)", "(24, )");  // the 24 float bytes read as 24 bools: not all 0/1
    fix_single_entry_crc(b);
    expect_error(b, "of dtype '|b1' is");
  }
  SUBCASE("shape does not match the data") {
    auto b = bytes;
    patch(b, "(2, 3)", "(2, 4)");
    fix_single_entry_crc(b);
    expect_error(b, "entry 'w.npy': shape [2, 4] of dtype '<f4' does not match the 24 data bytes");
  }
  SUBCASE("malformed header") {
    auto b = bytes;
    patch(b, "False", "Fals_");
    fix_single_entry_crc(b);
    expect_error(b, "entry 'w.npy': header expected True or False");
  }
  SUBCASE("a size field claiming 2^40 bytes") {
    auto b = bytes;
    const size_t cd = get<uint32_t>(b, b.size() - 22 + 16);
    // ZIP64 sizes in an extra field cannot be spliced in place; a 32-bit
    // field at its maximum that points past the file makes the same point.
    put<uint32_t>(b, cd + 20, 0xfffffff0u);
    put<uint32_t>(b, cd + 24, 0xfffffff0u);
    expect_error(b, "entry 'w.npy'");
    b = bytes;
    put<uint32_t>(b, b.size() - 22 + 12, 0xfffffff0u);  // central directory size
    expect_error(b, "central directory");
  }
  SUBCASE("entry count larger than the directory") {
    auto b = bytes;
    put<uint16_t>(b, b.size() - 22 + 8, 4000);
    put<uint16_t>(b, b.size() - 22 + 10, 4000);
    expect_error(b, "entry count 4000");
  }
}

TEST_CASE("read_npz follows ZIP64 extra fields and end records") {
  // Rewrites a one-entry archive of ours the way a ZIP64 writer lays it out:
  // 0xffffffff in the central header with the real values in a ZIP64 extra
  // field, and a ZIP64 end record found through its locator.
  TempDir dir;
  const Tensor w = ramp({3, 5}, 0.5f);
  write_npz(dir.file("a.npz"), {{"layer.w", w}});
  const auto b = read_bytes(dir.file("a.npz"));
  const size_t cd = get<uint32_t>(b, b.size() - 22 + 16);
  const uint64_t size = get<uint32_t>(b, cd + 24);
  const size_t name_len = get<uint16_t>(b, cd + 28);

  std::vector<uint8_t> z(b.begin(), b.begin() + static_cast<long>(cd));
  auto append = [&](auto v) {
    const size_t at = z.size();
    z.resize(at + sizeof(v));
    std::memcpy(z.data() + at, &v, sizeof(v));
  };
  z.insert(z.end(), b.begin() + static_cast<long>(cd), b.begin() + static_cast<long>(cd + 20));
  append(uint32_t{0xffffffff});  // compressed size
  append(uint32_t{0xffffffff});  // size
  append(static_cast<uint16_t>(name_len));
  append(uint16_t{28});          // extra length
  append(uint16_t{0});           // comment
  append(uint16_t{0});           // disk
  append(uint16_t{0});           // internal attributes
  append(uint32_t{0});           // external attributes
  append(uint32_t{0xffffffff});  // local header offset
  z.insert(z.end(), b.begin() + static_cast<long>(cd + 46),
           b.begin() + static_cast<long>(cd + 46 + name_len));
  append(uint16_t{1});  // ZIP64 extra: size, compressed size, offset
  append(uint16_t{24});
  append(size);
  append(size);
  append(uint64_t{0});
  const uint64_t cd_size = z.size() - cd;
  const uint64_t end64 = z.size();
  append(uint32_t{0x06064b50});
  append(uint64_t{44});
  append(uint16_t{45});
  append(uint16_t{45});
  append(uint32_t{0});
  append(uint32_t{0});
  append(uint64_t{1});
  append(uint64_t{1});
  append(cd_size);
  append(uint64_t{cd});
  append(uint32_t{0x07064b50});  // locator
  append(uint32_t{0});
  append(end64);
  append(uint32_t{1});
  append(uint32_t{0x06054b50});  // end record, every field deferred to ZIP64
  append(uint16_t{0});
  append(uint16_t{0});
  append(uint16_t{0xffff});
  append(uint16_t{0xffff});
  append(uint32_t{0xffffffff});
  append(uint32_t{0xffffffff});
  append(uint16_t{0});
  write_bytes(dir.file("z64.npz"), z);

  const auto t = read_npz(dir.file("z64.npz"));
  REQUIRE(t.size() == 1);
  CHECK(t[0].first == "layer.w");
  CHECK(bit_equal(t[0].second, w));

  // The same archive without its ZIP64 extra field cannot be read.
  auto broken = z;
  // Extra field id 1 -> 0: an unknown field that the reader skips.
  std::fill(broken.begin() + static_cast<long>(cd + 46 + name_len),
            broken.begin() + static_cast<long>(cd + 46 + name_len + 2), 0);
  write_bytes(dir.file("broken.npz"), broken);
  const auto m = error_message<FormatError>([&] { read_npz(dir.file("broken.npz")); });
  CHECK(m.find("entry 'layer.w.npy': sizes are 0xffffffff but there is no ZIP64 extra field") !=
        std::string::npos);
}

TEST_CASE("read_npz of a missing file is an IoError") {
  TempDir dir;
  const auto m = error_message<IoError>([&] { read_npz(dir.file("missing.npz")); });
  CHECK(m.find(dir.file("missing.npz")) != std::string::npos);
}

TEST_CASE("write_npz failures are IoErrors that keep the previous file") {
  TempDir dir;
  const std::string missing = dir.file("no/such/dir.npz");
  const auto m = error_message<IoError>([&] { write_npz(missing, sample()); });
  CHECK(m.find(missing) != std::string::npos);
  CHECK(dir.count() == 0);

  const std::string p = dir.file("w.npz");
  write_npz(p, {{"a", ramp({3}, 1.f)}});
  const auto before = read_bytes(p);
  inject_write_failure_after(200);
  CHECK_THROWS_AS(write_npz(p, sample()), IoError);
  CHECK(read_bytes(p) == before);
  CHECK(dir.count() == 1);
}

TEST_CASE("write_npz rejects empty, duplicate and undefined entries") {
  TempDir dir;
  CHECK_THROWS_AS(write_npz(dir.file("x.npz"), {{"", Tensor::ones({1})}}), UsageError);
  CHECK_THROWS_AS(
      write_npz(dir.file("x.npz"), {{"a", Tensor::ones({1})}, {"a", Tensor::ones({1})}}),
      UsageError);
  CHECK_THROWS_AS(write_npz(dir.file("x.npz"), {{"a", Tensor()}}), UsageError);
  CHECK(dir.count() == 0);
}
