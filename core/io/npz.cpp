// .npz writer and validating reader (format notes in npz.h).
//
// ZIP structures used (APPNOTE.TXT, all little-endian):
//   local header      sig 0x04034b50, 30 bytes + name + extra, then the data
//   central header    sig 0x02014b50, 46 bytes + name + extra + comment
//   end of central    sig 0x06054b50, 22 bytes + comment (the last record)
//   ZIP64 end record  sig 0x06064b50, found through its locator (0x07064b50)
//                     just before the end of central directory record
// The central directory is the source of truth for sizes, offsets and CRCs;
// local headers are checked against it (numpy's writer puts its sizes only in
// a ZIP64 extra field of the local header).
#include "npz.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "../error.h"
#include "file.h"

namespace spruce::io {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndSize = 22;
constexpr uint16_t kVersion20 = 20;
// 1980-01-01 00:00 in MS-DOS format: a fixed stamp keeps files reproducible.
constexpr uint16_t kDosTime = 0;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr uint16_t kFlagEncrypted = 0x0001;
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint16_t kMethodStored = 0;
constexpr uint16_t kMethodDeflate = 8;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr char kNpyMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
// Deflate cannot expand data by more than about 1032:1; a larger claimed
// uncompressed size is corrupt, and checking it bounds the allocation.
constexpr uint64_t kMaxDeflateRatio = 1032;

// ---------------------------------------------------------------- writing

// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with
// spaces and a final '\n' so the data starts at a multiple of 64 bytes, as
// numpy writes it.
std::string npy_header(const Shape& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    if (shape.size() == 1)
      dict += ',';
    else if (i + 1 < shape.size())
      dict += ", ";
  }
  dict += "), }";
  const size_t unpadded = sizeof(kNpyMagic) + 2 + 2 + dict.size() + 1;
  dict.append((unpadded + 63) / 64 * 64 - unpadded, ' ');
  dict += '\n';
  std::string out(kNpyMagic, sizeof(kNpyMagic));
  out += '\x01';  // format version 1.0
  out += '\x00';
  const auto len = static_cast<uint16_t>(dict.size());
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>(len >> 8);
  return out + dict;
}

struct WrittenEntry {
  std::string name;
  uint16_t flags;
  uint32_t crc;
  uint32_t size;
  uint32_t offset;
};

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// ---------------------------------------------------------------- reading

struct CentralEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t offset = 0;
};

// Replaces 0xffffffff fields of a central header by their ZIP64 values, which
// appear in the extra field in the order size, compressed size, offset.
void apply_zip64_extra(ByteReader& r, std::span<const uint8_t> extra, CentralEntry& e, bool size64,
                       bool csize64, bool offset64, const std::string& what) {
  ByteReader x(extra, r.source());
  while (x.remaining() >= 4) {
    const auto id = x.read_le<uint16_t>("extra field id");
    const auto len = x.read_le<uint16_t>("extra field length");
    auto body = x.take(len, what + ": extra field");
    if (id != kZip64ExtraId) continue;
    ByteReader z(body, r.source());
    if (size64) e.size = z.read_le<uint64_t>(what + ": ZIP64 uncompressed size");
    if (csize64) e.compressed_size = z.read_le<uint64_t>(what + ": ZIP64 compressed size");
    if (offset64) e.offset = z.read_le<uint64_t>(what + ": ZIP64 local header offset");
    return;
  }
  if (size64 || csize64 || offset64)
    r.fail(what + ": sizes are 0xffffffff but there is no ZIP64 extra field");
}

// Minimal reader of the Python-literal dict in an .npy header.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const ByteReader& err) : s_(text), err_(err) {}

  [[noreturn]] void fail(const std::string& msg) const {
    std::string shown = s_.substr(0, 120);
    while (!shown.empty() && (shown.back() == '\n' || shown.back() == ' ')) shown.pop_back();
    err_.fail("header " + msg + " at character " + std::to_string(i_) + " of \"" + shown + "\"");
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool accept(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(std::string("expected '") + c + "'");
  }
  bool at(char c) {
    ws();
    return i_ < s_.size() && s_[i_] == c;
  }
  std::string string_literal() {
    ws();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a quoted string");
    const char q = s_[i_++];
    const size_t end = s_.find(q, i_);
    if (end == std::string::npos) fail("unterminated string");
    std::string v = s_.substr(i_, end - i_);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    ws();
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail("expected True or False");
  }
  int64_t integer() {
    ws();
    const size_t start = i_;
    int64_t v = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("dimension too large");
      v = v * 10 + (s_[i_++] - '0');
    }
    if (i_ == start) fail("expected a non-negative integer");
    if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix
    return v;
  }
  Shape tuple() {
    Shape shape;
    expect('(');
    while (!accept(')')) {
      shape.push_back(integer());
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return shape;
  }
  bool done() {
    ws();
    return i_ == s_.size();
  }

 private:
  const std::string& s_;
  const ByteReader& err_;
  size_t i_ = 0;
};

// An .npy element type: kind 'f' (float), 'i' (signed), 'u' (unsigned) or
// 'b' (bool), its size in bytes, and whether the file's byte order differs
// from ours (little-endian).
struct NpyDtype {
  char kind;
  size_t size;
  bool swap;
};

// PyTorch's state_dict dtypes as numpy writes them: '<f4' weights, '<i8'
// num_batches_tracked, '<f8', '|b1' or '|u1' masks; other sizes of the same
// kinds and big-endian ('>') variants cost nothing extra to accept.
NpyDtype parse_dtype(const std::string& descr, const ByteReader& r) {
  static const std::string kExpected =
      " (expected a float, integer or bool dtype such as '<f4', '<f8', '<i8', '|u1' or '|b1')";
  if (descr.size() != 3) r.fail("dtype '" + descr + "' is not supported" + kExpected);
  const char order = descr[0], kind = descr[1], size = descr[2];
  const bool known = (kind == 'f' && (size == '4' || size == '8')) ||
                     ((kind == 'i' || kind == 'u') &&
                      (size == '1' || size == '2' || size == '4' || size == '8')) ||
                     (kind == 'b' && size == '1');
  if (!known || (order != '<' && order != '>' && order != '|' && order != '='))
    r.fail("dtype '" + descr + "' is not supported" + kExpected);
  const auto bytes = static_cast<size_t>(size - '0');
  if (order == '|' && bytes != 1) r.fail("dtype '" + descr + "' has no byte order" + kExpected);
  return {kind, bytes, order == '>' && bytes > 1};
}

// One element (little-endian bytes) as float32. Integers must be exactly
// representable (|v| <= 2^24 or a multiple that float keeps): a counter or an
// index silently rounded would be a wrong answer.
float element_to_float(const uint8_t* b, const NpyDtype& dtype, const std::string& descr,
                       uint64_t index, const ByteReader& r) {
  auto load = [&](auto v) {
    std::memcpy(&v, b, sizeof(v));
    return v;
  };
  auto exact = [&](auto v) -> float {
    const auto f = static_cast<float>(v);
    if (static_cast<long double>(f) !=
        static_cast<long double>(v))  // exact for 64-bit integers on x86
      r.fail("element " + std::to_string(index) + " of dtype '" + descr + "' is " +
             std::to_string(v) + ", which float32 cannot hold exactly");
    return f;
  };
  switch (dtype.kind) {
    case 'f':
      return dtype.size == 4 ? load(float{}) : static_cast<float>(load(double{}));
    case 'b':
      if (b[0] > 1)
        r.fail("element " + std::to_string(index) + " of dtype '|b1' is " + std::to_string(b[0]) +
               ", expected 0 or 1");
      return b[0];
    case 'i':
      switch (dtype.size) {
        case 1:
          return load(int8_t{});
        case 2:
          return load(int16_t{});
        case 4:
          return exact(load(int32_t{}));
        default:
          return exact(load(int64_t{}));
      }
    default:
      switch (dtype.size) {
        case 1:
          return load(uint8_t{});
        case 2:
          return load(uint16_t{});
        case 4:
          return exact(load(uint32_t{}));
        default:
          return exact(load(uint64_t{}));
      }
  }
}

// Parses one .npy array (the bytes of one archive entry) into a float tensor.
Tensor parse_npy(std::span<const uint8_t> bytes, const std::string& source) {
  ByteReader r(bytes, source);
  auto magic = r.take(sizeof(kNpyMagic), "the .npy magic");
  if (std::memcmp(magic.data(), kNpyMagic, sizeof(kNpyMagic)) != 0)
    r.fail("not an .npy array (bad magic, expected \\x93NUMPY)");
  const auto major = r.read_le<uint8_t>(".npy version");
  const auto minor = r.read_le<uint8_t>(".npy version");
  uint32_t header_len = 0;
  if (major == 1)
    header_len = r.read_le<uint16_t>(".npy header length");
  else if (major == 2 || major == 3)
    header_len = r.read_le<uint32_t>(".npy header length");
  else
    r.fail("unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor) +
           " (expected 1.0, 2.0 or 3.0)");
  const std::string header = r.take_string(header_len, ".npy header");

  HeaderParser p(header, r);
  std::string descr;
  bool fortran = false;
  Shape shape;
  bool has_descr = false, has_order = false, has_shape = false;
  p.expect('{');
  while (!p.accept('}')) {
    const std::string key = p.string_literal();
    p.expect(':');
    if (key == "descr") {
      if (!p.at('\'') && !p.at('"'))
        p.fail("descr is not a simple dtype (structured arrays are not supported)");
      descr = p.string_literal();
      has_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.boolean();
      has_order = true;
    } else if (key == "shape") {
      shape = p.tuple();
      has_shape = true;
    } else {
      p.fail("unexpected key '" + key + "'");
    }
    if (!p.accept(',')) {
      p.expect('}');
      break;
    }
  }
  if (!p.done()) p.fail("unexpected text after '}'");
  if (!has_descr || !has_order || !has_shape)
    p.fail(std::string("is missing key '") +
           (!has_descr   ? "descr"
            : !has_order ? "fortran_order"
                         : "shape") +
           "'");

  const NpyDtype dtype = parse_dtype(descr, r);
  const size_t item = dtype.size;

  // The data must be exactly numel items; compare without overflow.
  if (!dims_fit_int64(shape))
    r.fail("shape " + shape_str(shape) + " has more elements than int64 can count");
  const uint64_t data_bytes = r.remaining();
  const auto numel = static_cast<uint64_t>(numel_of(shape));
  if (numel > data_bytes / item || numel * item != data_bytes)
    r.fail("shape " + shape_str(shape) + " of dtype '" + descr + "' does not match the " +
           std::to_string(data_bytes) + " data bytes");

  auto data = r.take(data_bytes, ".npy data");
  Tensor t = Tensor::empty(shape);
  float* out = t.data();
  auto value = [&](uint64_t i) -> float {
    const uint8_t* src = data.data() + i * item;
    uint8_t b[8] = {};
    for (size_t k = 0; k < item && k < sizeof(b); ++k) b[k] = src[dtype.swap ? item - 1 - k : k];
    return element_to_float(b, dtype, descr, i, r);
  };
  const bool native_f4 = dtype.kind == 'f' && item == 4 && !dtype.swap;
  if (!fortran || shape.size() <= 1) {
    if (native_f4) {
      if (numel) std::memcpy(out, data.data(), data_bytes);
    } else {
      for (uint64_t i = 0; i < numel; ++i) out[i] = value(i);
    }
    return t;
  }
  // Fortran order: the first index varies fastest in the file. Walk the
  // output in C order and track the matching file offset.
  const size_t nd = shape.size();
  std::vector<uint64_t> stride(nd, 1);
  for (size_t d = 1; d < nd; ++d) stride[d] = stride[d - 1] * static_cast<uint64_t>(shape[d - 1]);
  std::vector<int64_t> idx(nd, 0);
  uint64_t src = 0;
  for (uint64_t k = 0; k < numel; ++k) {
    out[k] = value(src);
    for (size_t d = nd; d-- > 0;) {
      src += stride[d];
      if (++idx[d] < shape[d]) break;
      src -= stride[d] * static_cast<uint64_t>(shape[d]);
      idx[d] = 0;
    }
  }
  return t;
}

// Inflates a raw deflate stream of a ZIP entry into exactly `size` bytes.
std::vector<uint8_t> inflate_entry(std::span<const uint8_t> in, uint64_t size,
                                   const ByteReader& err) {
  std::vector<uint8_t> out(static_cast<size_t>(size));
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) err.fail("zlib inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.next_out = out.data();
  size_t in_left = in.size(), out_left = out.size();
  int rc = Z_OK;
  // zlib counts in uInt: feed at most 1 GiB at a time.
  constexpr size_t kChunk = size_t{1} << 30;
  while (rc == Z_OK) {
    if (zs.avail_in == 0) {
      zs.avail_in = static_cast<uInt>(std::min(in_left, kChunk));
      in_left -= zs.avail_in;
    }
    if (zs.avail_out == 0) {
      zs.avail_out = static_cast<uInt>(std::min(out_left, kChunk));
      out_left -= zs.avail_out;
    }
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) break;    // input ran out
    if (rc == Z_BUF_ERROR && zs.avail_out == 0 && out_left == 0) break;  // output full
    if (rc == Z_BUF_ERROR) rc = Z_OK;
  }
  const uint64_t produced = zs.total_out;
  const std::string msg = zs.msg              ? zs.msg
                          : rc == Z_BUF_ERROR ? "stream ends early or is longer than its size"
                                              : "error " + std::to_string(rc);
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) err.fail("deflate data is corrupted or truncated (zlib: " + msg + ")");
  if (produced != size)
    err.fail("deflate data inflates to " + std::to_string(produced) +
             " bytes, the directory says " + std::to_string(size));
  return out;
}

}  // namespace

void write_npz(const std::string& path, const NamedTensors& tensors) {
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) throw UsageError("write_npz '" + path + "': empty tensor name");
    if (!seen.insert(name).second)
      throw UsageError("write_npz '" + path + "': duplicate tensor name '" + name + "'");
    if (!t.defined())
      throw UsageError("write_npz '" + path + "': tensor '" + name + "' is undefined");
    if (name.size() + 4 > 0xffff)
      throw UsageError("write_npz '" + path + "': tensor name longer than 65531 bytes");
  }
  if (tensors.size() >= 0xffff)
    throw UsageError("write_npz '" + path + "': " + std::to_string(tensors.size()) +
                     " tensors, the .npz writer supports at most 65534");

  AtomicFile f(path);
  std::vector<WrittenEntry> entries;
  entries.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    const std::string header = npy_header(t.shape());
    const uint64_t data_bytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
    const uint64_t size = header.size() + data_bytes;
    if (size >= kMax32 || f.size() >= kMax32)
      throw UsageError("write_npz '" + path + "': archive exceeds 4 GiB at tensor '" + name +
                       "' (no ZIP64 support in the writer)");
    const std::span<const uint8_t> data(reinterpret_cast<const uint8_t*>(t.data()),
                                        static_cast<size_t>(data_bytes));
    uint32_t crc =
        crc32_update(0, {reinterpret_cast<const uint8_t*>(header.data()), header.size()});
    crc = crc32_update(crc, data);
    WrittenEntry e{name + ".npy", is_ascii(name) ? uint16_t{0} : kFlagUtf8, crc,
                   static_cast<uint32_t>(size), static_cast<uint32_t>(f.size())};
    f.write_le<uint32_t>(kLocalSig);
    f.write_le<uint16_t>(kVersion20);
    f.write_le<uint16_t>(e.flags);
    f.write_le<uint16_t>(kMethodStored);
    f.write_le<uint16_t>(kDosTime);
    f.write_le<uint16_t>(kDosDate);
    f.write_le<uint32_t>(e.crc);
    f.write_le<uint32_t>(e.size);  // compressed = uncompressed when stored
    f.write_le<uint32_t>(e.size);
    f.write_le<uint16_t>(static_cast<uint16_t>(e.name.size()));
    f.write_le<uint16_t>(0);  // extra field length
    f.write(e.name);
    f.write(header);
    f.write(data.data(), data.size());
    entries.push_back(std::move(e));
  }
  const uint64_t cd_offset = f.size();
  for (const auto& e : entries) {
    f.write_le<uint32_t>(kCentralSig);
    f.write_le<uint16_t>(kVersion20);  // made by
    f.write_le<uint16_t>(kVersion20);  // needed to extract
    f.write_le<uint16_t>(e.flags);
    f.write_le<uint16_t>(kMethodStored);
    f.write_le<uint16_t>(kDosTime);
    f.write_le<uint16_t>(kDosDate);
    f.write_le<uint32_t>(e.crc);
    f.write_le<uint32_t>(e.size);
    f.write_le<uint32_t>(e.size);
    f.write_le<uint16_t>(static_cast<uint16_t>(e.name.size()));
    f.write_le<uint16_t>(0);  // extra
    f.write_le<uint16_t>(0);  // comment
    f.write_le<uint16_t>(0);  // disk number
    f.write_le<uint16_t>(0);  // internal attributes
    f.write_le<uint32_t>(0);  // external attributes
    f.write_le<uint32_t>(e.offset);
    f.write(e.name);
  }
  const uint64_t cd_size = f.size() - cd_offset;
  if (f.size() >= kMax32)
    throw UsageError("write_npz '" + path +
                     "': archive exceeds 4 GiB (no ZIP64 support in the writer)");
  f.write_le<uint32_t>(kEndSig);
  f.write_le<uint16_t>(0);  // this disk
  f.write_le<uint16_t>(0);  // disk with the central directory
  f.write_le<uint16_t>(static_cast<uint16_t>(entries.size()));
  f.write_le<uint16_t>(static_cast<uint16_t>(entries.size()));
  f.write_le<uint32_t>(static_cast<uint32_t>(cd_size));
  f.write_le<uint32_t>(static_cast<uint32_t>(cd_offset));
  f.write_le<uint16_t>(0);  // comment length
  f.commit();
}

NamedTensors read_npz(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  const std::span<const uint8_t> all(bytes);
  ByteReader r(all, path);
  if (bytes.size() < kEndSize)
    r.fail("not a ZIP/.npz archive (" + std::to_string(bytes.size()) +
           " bytes, shorter than a ZIP end record)");

  // The end record is the last one, followed only by its comment (< 64 KiB).
  size_t end_pos = std::string::npos;
  const size_t lowest = bytes.size() > kEndSize + 0xffff ? bytes.size() - kEndSize - 0xffff : 0;
  for (size_t pos = bytes.size() - kEndSize + 1; pos-- > lowest;) {
    uint32_t sig;
    std::memcpy(&sig, bytes.data() + pos, 4);
    uint16_t comment;
    std::memcpy(&comment, bytes.data() + pos + 20, 2);
    if (sig == kEndSig && pos + kEndSize + comment <= bytes.size()) {
      end_pos = pos;
      break;
    }
  }
  if (end_pos == std::string::npos)
    r.fail("not a ZIP/.npz archive or truncated (no end-of-central-directory record)");

  r.seek(end_pos + 4, "end record");
  const auto disk = r.read_le<uint16_t>("end record: disk number");
  const auto cd_disk = r.read_le<uint16_t>("end record: central directory disk");
  const auto n_disk = r.read_le<uint16_t>("end record: entries on disk");
  uint64_t n_entries = r.read_le<uint16_t>("end record: entry count");
  uint64_t cd_size = r.read_le<uint32_t>("end record: central directory size");
  uint64_t cd_offset = r.read_le<uint32_t>("end record: central directory offset");
  uint64_t cd_limit = end_pos;  // the directory must end before this offset
  if (n_entries == 0xffff || cd_size == kMax32 || cd_offset == kMax32) {
    if (end_pos < 20) r.fail("ZIP64 end record locator missing");
    r.seek(end_pos - 20, "ZIP64 locator");
    if (r.read_le<uint32_t>("ZIP64 locator signature") != kZip64LocatorSig)
      r.fail("end record has ZIP64 markers but no ZIP64 locator precedes it");
    r.read_le<uint32_t>("ZIP64 locator: disk");
    const auto z_end = r.read_le<uint64_t>("ZIP64 locator: end record offset");
    if (z_end > end_pos - 20)
      r.fail("ZIP64 end record offset " + std::to_string(z_end) + " is past its locator");
    r.seek(static_cast<size_t>(z_end), "ZIP64 end record");
    if (r.read_le<uint32_t>("ZIP64 end record signature") != kZip64EndSig)
      r.fail("bad ZIP64 end record signature at offset " + std::to_string(z_end));
    r.read_le<uint64_t>("ZIP64 end record size");
    r.read_le<uint16_t>("ZIP64 end record: version made by");
    r.read_le<uint16_t>("ZIP64 end record: version needed");
    if (r.read_le<uint32_t>("ZIP64 end record: disk") != 0 ||
        r.read_le<uint32_t>("ZIP64 end record: central directory disk") != 0)
      r.fail("multi-disk ZIP archives are not supported");
    r.read_le<uint64_t>("ZIP64 end record: entries on disk");
    n_entries = r.read_le<uint64_t>("ZIP64 end record: entry count");
    cd_size = r.read_le<uint64_t>("ZIP64 end record: central directory size");
    cd_offset = r.read_le<uint64_t>("ZIP64 end record: central directory offset");
    cd_limit = z_end;
  } else if (disk != 0 || cd_disk != 0 || n_disk != n_entries) {
    r.fail("multi-disk ZIP archives are not supported");
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    r.fail("central directory (offset " + std::to_string(cd_offset) + ", " +
           std::to_string(cd_size) + " bytes) does not fit in the file before its end record at " +
           std::to_string(cd_limit));
  if (n_entries > cd_size / kCentralHeaderSize)
    r.fail("entry count " + std::to_string(n_entries) + " does not fit in a central directory of " +
           std::to_string(cd_size) + " bytes");

  NamedTensors out;
  out.reserve(static_cast<size_t>(n_entries));
  std::unordered_set<std::string> seen;
  ByteReader cd(all.first(static_cast<size_t>(cd_offset + cd_size)), path);
  cd.seek(static_cast<size_t>(cd_offset), "central directory");
  for (uint64_t i = 0; i < n_entries; ++i) {
    const std::string idx = "central directory entry " + std::to_string(i);
    if (cd.read_le<uint32_t>(idx + " signature") != kCentralSig)
      cd.fail(idx + ": bad signature (expected 0x02014b50)");
    CentralEntry e;
    cd.read_le<uint16_t>(idx + ": version made by");
    cd.read_le<uint16_t>(idx + ": version needed");
    e.flags = cd.read_le<uint16_t>(idx + ": flags");
    e.method = cd.read_le<uint16_t>(idx + ": method");
    cd.read_le<uint32_t>(idx + ": time and date");
    e.crc = cd.read_le<uint32_t>(idx + ": CRC");
    e.compressed_size = cd.read_le<uint32_t>(idx + ": compressed size");
    e.size = cd.read_le<uint32_t>(idx + ": size");
    const auto name_len = cd.read_le<uint16_t>(idx + ": name length");
    const auto extra_len = cd.read_le<uint16_t>(idx + ": extra length");
    const auto comment_len = cd.read_le<uint16_t>(idx + ": comment length");
    cd.read_le<uint16_t>(idx + ": disk");
    cd.read_le<uint16_t>(idx + ": internal attributes");
    cd.read_le<uint32_t>(idx + ": external attributes");
    e.offset = cd.read_le<uint32_t>(idx + ": local header offset");
    e.name = cd.take_string(name_len, idx + ": name");
    const std::string what = "entry '" + e.name + "'";
    auto extra = cd.take(extra_len, what + ": extra field");
    cd.take(comment_len, what + ": comment");
    apply_zip64_extra(cd, extra, e, e.size == kMax32, e.compressed_size == kMax32,
                      e.offset == kMax32, what);

    if (e.flags & kFlagEncrypted) r.fail(what + ": encrypted entries are not supported");
    if (e.method != kMethodStored && e.method != kMethodDeflate)
      r.fail(what + ": compression method " + std::to_string(e.method) +
             " is not supported (expected 0 stored or 8 deflate)");
    if (e.name.size() < 4 || e.name.compare(e.name.size() - 4, 4, ".npy") != 0)
      r.fail(what + ": not an .npy array (name does not end in .npy)");

    // Local header: must agree with the directory and lie before it.
    if (e.offset > cd_offset)
      r.fail(what + ": local header offset " + std::to_string(e.offset) +
             " is past the central directory");
    ByteReader loc(all.first(static_cast<size_t>(cd_offset)), path);
    loc.seek(static_cast<size_t>(e.offset), what + ": local header");
    loc.need(kLocalHeaderSize, what + ": local header");
    if (loc.read_le<uint32_t>(what + ": local header signature") != kLocalSig)
      loc.fail(what + ": bad local header signature at offset " + std::to_string(e.offset));
    loc.read_le<uint16_t>(what + ": local version");
    const auto lflags = loc.read_le<uint16_t>(what + ": local flags");
    const auto lmethod = loc.read_le<uint16_t>(what + ": local method");
    loc.read_le<uint32_t>(what + ": local time and date");
    loc.read_le<uint32_t>(what + ": local CRC");
    const auto lcsize = loc.read_le<uint32_t>(what + ": local compressed size");
    const auto lsize = loc.read_le<uint32_t>(what + ": local size");
    const auto lname_len = loc.read_le<uint16_t>(what + ": local name length");
    const auto lextra_len = loc.read_le<uint16_t>(what + ": local extra length");
    const std::string lname = loc.take_string(lname_len, what + ": local name");
    loc.take(lextra_len, what + ": local extra field");
    if (lname != e.name) loc.fail(what + ": local header names '" + lname + "'");
    if (lmethod != e.method)
      loc.fail(what + ": local header method " + std::to_string(lmethod) + ", directory says " +
               std::to_string(e.method));
    // Sizes in the local header are meaningful unless deferred to a data
    // descriptor (flag bit 3) or moved to a ZIP64 extra field.
    const bool deferred = (lflags & 0x0008) != 0;
    if (!deferred && lsize != kMax32 && lcsize != kMax32 &&
        (lsize != e.size || lcsize != e.compressed_size))
      loc.fail(what + ": local header sizes " + std::to_string(lcsize) + "/" +
               std::to_string(lsize) + " disagree with the directory " +
               std::to_string(e.compressed_size) + "/" + std::to_string(e.size));
    auto raw = loc.take(e.compressed_size, what + ": data");

    ByteReader entry_err(raw, path + ": " + what);
    std::vector<uint8_t> inflated;
    std::span<const uint8_t> content = raw;
    if (e.method == kMethodStored) {
      if (e.size != e.compressed_size)
        entry_err.fail("stored entry with size " + std::to_string(e.size) + " != compressed size " +
                       std::to_string(e.compressed_size));
    } else {
      if (e.size > e.compressed_size * kMaxDeflateRatio + 64)
        entry_err.fail("uncompressed size " + std::to_string(e.size) + " is impossible for " +
                       std::to_string(e.compressed_size) + " deflated bytes");
      inflated = inflate_entry(raw, e.size, entry_err);
      content = inflated;
    }
    const uint32_t crc = crc32_update(0, content);
    if (crc != e.crc) entry_err.fail("CRC mismatch: data is corrupted");

    std::string name = e.name.substr(0, e.name.size() - 4);
    if (!seen.insert(name).second) r.fail("duplicate entry '" + e.name + "'");
    out.emplace_back(std::move(name), parse_npy(content, path + ": " + what));
  }
  return out;
}

}  // namespace spruce::io
