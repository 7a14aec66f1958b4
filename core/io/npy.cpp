// .npy arrays (format notes in npy.h): the header spruce writes and the
// validating parser of the arrays numpy writes.
#include "npy.h"

#include <cstring>
#include <limits>

#include "../error.h"
#include "file.h"

namespace spruce::io {

namespace {

constexpr char kNpyMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

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

}  // namespace

// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with
// spaces and a final '\n' so the data starts at a multiple of 64 bytes.
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

}  // namespace spruce::io
