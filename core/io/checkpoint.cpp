// Checkpoint container: writer and validating reader (layout in checkpoint.h).
#include "checkpoint.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "../error.h"
#include "file.h"

namespace spruce::io {

namespace {

constexpr char kMagic[8] = {'S', 'P', 'R', 'U', 'C', 'E', 'C', 'K'};
// Magic, version, the two counts and the CRC: the smallest valid file.
constexpr size_t kMinSize = 8 + 4 + 4 + 4 + 4;

std::string label(const std::string& source) {
  return source.empty() ? std::string("checkpoint") : source;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// The magic as printable text for an error message.
std::string printable(std::span<const uint8_t> bytes) {
  std::string s;
  for (uint8_t b : bytes) {
    if (b >= 32 && b < 127) {
      s += static_cast<char>(b);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", b);
      s += buf;
    }
  }
  return s;
}

// The size the file's own length fields declare, walked without trusting
// the CRC: every count, length and shape read from the bytes present, plus
// the 4-byte CRC. Returns 0 when the walk stays inside the file; otherwise
// the number of bytes it needs, and sets `exact` when that is the whole
// declared size (the walk reached the end of the last tensor), not only a
// lower bound (it stopped at a length field that points past the end).
uint64_t declared_size_beyond(std::span<const uint8_t> all, bool& exact) {
  const uint64_t size = all.size();
  uint64_t at = 12;  // magic and version, checked by the caller
  exact = false;
  // Reads a little-endian integer at `at`, or reports `at + n + 4` as needed.
  auto get = [&](int n, uint64_t& v) {
    if (at + n > size) return false;
    v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | all[at + i];
    at += n;
    return true;
  };
  auto skip = [&](uint64_t n) {
    if (n > size - at) return false;
    at += n;
    return true;
  };
  auto beyond = [&](uint64_t n) {
    // Saturating: a lying length must not wrap around to a small number.
    const uint64_t need = n > UINT64_MAX - at - 4 ? UINT64_MAX : at + n + 4;
    return need > size ? need : 0;
  };
  uint64_t count = 0, len = 0;
  if (!get(4, count)) return beyond(4);
  for (uint64_t i = 0; i < count; ++i) {
    if (!get(4, len)) return beyond(4);
    if (!skip(len)) return beyond(len);
    if (!get(8, len)) return beyond(8);
    if (!skip(len)) return beyond(len);
  }
  if (!get(4, count)) return beyond(4);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t ndim = 0, dim = 0;
    if (!get(4, len)) return beyond(4);
    if (!skip(len)) return beyond(len);
    if (!get(4, ndim)) return beyond(4);
    uint64_t bytes = sizeof(float);
    for (uint64_t d = 0; d < ndim; ++d) {
      if (!get(8, dim)) return beyond(8);
      // Negative or overflowing shapes are the parser's to report, with names.
      if (static_cast<int64_t>(dim) < 0) return 0;
      bytes = (dim != 0 && bytes > UINT64_MAX / dim) ? UINT64_MAX : bytes * dim;
    }
    if (!skip(bytes)) return beyond(bytes);
  }
  exact = true;
  return beyond(0);
}

}  // namespace

void Checkpoint::set_meta(const std::string& key, std::string value) {
  for (auto& [k, v] : meta) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  meta.emplace_back(key, std::move(value));
}

bool Checkpoint::has_meta(const std::string& key) const {
  for (const auto& kv : meta)
    if (kv.first == key) return true;
  return false;
}

const std::string& Checkpoint::meta_value(const std::string& key) const {
  for (const auto& kv : meta)
    if (kv.first == key) return kv.second;
  std::string keys;
  for (const auto& kv : meta) keys += (keys.empty() ? "" : ", ") + kv.first;
  throw FormatError(label(source) + ": no metadata key '" + key +
                    "' (keys: " + (keys.empty() ? "none" : keys) + ")");
}

void Checkpoint::set_tensor(const std::string& name, const Tensor& t) {
  for (auto& [n, v] : tensors) {
    if (n == name) {
      v = t;
      return;
    }
  }
  tensors.emplace_back(name, t);
}

bool Checkpoint::has_tensor(const std::string& name) const {
  for (const auto& nt : tensors)
    if (nt.first == name) return true;
  return false;
}

const Tensor& Checkpoint::tensor(const std::string& name) const {
  for (const auto& nt : tensors)
    if (nt.first == name) return nt.second;
  throw FormatError(label(source) + ": no tensor named '" + name + "' (" +
                    std::to_string(tensors.size()) + " tensors present)");
}

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  // Check everything before creating the file, so a usage error writes nothing.
  std::unordered_set<std::string> seen;
  for (const auto& [key, value] : ckpt.meta) {
    if (!seen.insert(key).second)
      throw UsageError("save_checkpoint '" + path + "': duplicate metadata key '" + key + "'");
    if (key.size() > std::numeric_limits<uint32_t>::max())
      throw UsageError("save_checkpoint '" + path + "': metadata key longer than 4 GiB");
  }
  seen.clear();
  for (const auto& [name, t] : ckpt.tensors) {
    if (!seen.insert(name).second)
      throw UsageError("save_checkpoint '" + path + "': duplicate tensor name '" + name + "'");
    if (!t.defined())
      throw UsageError("save_checkpoint '" + path + "': tensor '" + name + "' is undefined");
    if (name.size() > std::numeric_limits<uint32_t>::max())
      throw UsageError("save_checkpoint '" + path + "': tensor name longer than 4 GiB");
  }
  if (ckpt.meta.size() > std::numeric_limits<uint32_t>::max() ||
      ckpt.tensors.size() > std::numeric_limits<uint32_t>::max())
    throw UsageError("save_checkpoint '" + path + "': more than 2^32 entries");

  AtomicFile f(path);
  f.write(kMagic, sizeof(kMagic));
  f.write_le<uint32_t>(kCheckpointVersion);
  f.write_le<uint32_t>(static_cast<uint32_t>(ckpt.meta.size()));
  for (const auto& [key, value] : ckpt.meta) {
    f.write_le<uint32_t>(static_cast<uint32_t>(key.size()));
    f.write(key);
    f.write_le<uint64_t>(value.size());
    f.write(value);
  }
  f.write_le<uint32_t>(static_cast<uint32_t>(ckpt.tensors.size()));
  for (const auto& [name, t] : ckpt.tensors) {
    f.write_le<uint32_t>(static_cast<uint32_t>(name.size()));
    f.write(name);
    f.write_le<uint32_t>(static_cast<uint32_t>(t.dim()));
    for (int64_t d : t.shape()) f.write_le<int64_t>(d);
    f.write(t.data(), static_cast<size_t>(t.numel()) * sizeof(float));
  }
  f.write_le<uint32_t>(f.crc());
  f.commit();
}

Checkpoint load_checkpoint(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  const std::span<const uint8_t> all(bytes);
  ByteReader header(all, path);

  if (bytes.empty()) header.fail("file is empty (expected a spruce checkpoint)");
  if (bytes.size() < sizeof(kMagic) && std::memcmp(bytes.data(), kMagic, bytes.size()) == 0)
    header.fail("truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the magic");
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    header.fail("not a spruce checkpoint (magic is '" +
                printable(all.first(std::min(bytes.size(), sizeof(kMagic)))) +
                "', expected 'SPRUCECK')");
  header.seek(sizeof(kMagic), "version");
  const auto version = header.read_le<uint32_t>("format version");
  if (version > kCheckpointVersion)
    header.fail("written by a newer spruce (version " + std::to_string(version) +
                ", this build reads up to " + std::to_string(kCheckpointVersion) + ")");
  if (version == 0) header.fail("format version 0 is invalid (expected 1)");
  if (bytes.size() < kMinSize)
    header.fail("truncated: expected at least " + std::to_string(kMinSize) + " bytes, file has " +
                std::to_string(bytes.size()));
  // The CRC comes before the structure so that any damage is reported as what
  // it is rather than as a strange field. A cut file fails the CRC too (its
  // last 4 bytes are data, not a CRC): when the length fields declare more
  // bytes than the file has, say it is truncated, and by how much.
  const size_t body_size = bytes.size() - 4;
  uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + body_size, 4);
  const uint32_t crc = crc32_update(0, all.first(body_size));
  if (crc != stored_crc) {
    bool exact = false;
    if (const uint64_t need = declared_size_beyond(all, exact); need != 0)
      header.fail("truncated: expected " + std::string(exact ? "" : "at least ") +
                  (need == UINT64_MAX ? std::string("2^64") : std::to_string(need)) +
                  " bytes, file has " + std::to_string(bytes.size()));
    header.fail("CRC mismatch: file is corrupted (stored " + hex32(stored_crc) + ", computed " +
                hex32(crc) + " over " + std::to_string(body_size) + " bytes)");
  }

  ByteReader r(all.first(body_size), path);
  r.seek(12, "metadata count");
  Checkpoint ckpt;
  ckpt.source = path;

  const auto n_meta = r.read_le<uint32_t>("metadata count");
  // Each entry takes at least 12 bytes: a bound before reserving anything.
  r.need(static_cast<uint64_t>(n_meta) * 12, "metadata count " + std::to_string(n_meta));
  ckpt.meta.reserve(n_meta);
  std::unordered_set<std::string> seen;
  for (uint32_t i = 0; i < n_meta; ++i) {
    const std::string entry = "metadata entry " + std::to_string(i);
    const auto key_len = r.read_le<uint32_t>("key length of " + entry);
    std::string key = r.take_string(key_len, "key of " + entry);
    const auto value_len = r.read_le<uint64_t>("value length of metadata '" + key + "'");
    std::string value = r.take_string(value_len, "value of metadata '" + key + "'");
    if (!seen.insert(key).second) r.fail("duplicate metadata key '" + key + "'");
    ckpt.meta.emplace_back(std::move(key), std::move(value));
  }

  const auto n_tensors = r.read_le<uint32_t>("tensor count");
  // Each tensor takes at least 8 bytes (name length, ndim).
  r.need(static_cast<uint64_t>(n_tensors) * 8, "tensor count " + std::to_string(n_tensors));
  ckpt.tensors.reserve(n_tensors);
  seen.clear();
  for (uint32_t i = 0; i < n_tensors; ++i) {
    const std::string entry = "tensor " + std::to_string(i);
    const auto name_len = r.read_le<uint32_t>("name length of " + entry);
    std::string name = r.take_string(name_len, "name of " + entry);
    const std::string what = "tensor '" + name + "'";
    const auto ndim = r.read_le<uint32_t>("ndim of " + what);
    r.need(static_cast<uint64_t>(ndim) * 8,
           "shape of " + what + " (ndim " + std::to_string(ndim) + ")");
    Shape shape(ndim);
    bool empty = false;
    for (uint32_t d = 0; d < ndim; ++d) {
      shape[d] = r.read_le<int64_t>("shape of " + what);
      if (shape[d] < 0)
        r.fail(what + ": dimension " + std::to_string(d) + " is " + std::to_string(shape[d]) +
               " (expected >= 0)");
      empty = empty || shape[d] == 0;
    }
    if (!dims_fit_int64(shape))
      r.fail(what + ": shape " + shape_str(shape) + " has more elements than int64 can count");
    // Data bytes, computed without overflow: any product that would exceed
    // the remaining bytes is already an error.
    uint64_t data_bytes = 0;
    if (!empty) {
      data_bytes = sizeof(float);
      for (int64_t d : shape) {
        if (data_bytes > r.remaining() / static_cast<uint64_t>(d))
          r.fail(what + ": shape " + shape_str(shape) + " needs more bytes than the " +
                 std::to_string(r.remaining()) + " that remain (truncated or corrupted)");
        data_bytes *= static_cast<uint64_t>(d);
      }
    }
    auto data = r.take(data_bytes, "data of " + what + " " + shape_str(shape));
    if (!seen.insert(name).second) r.fail("duplicate tensor name '" + name + "'");
    Tensor t = Tensor::empty(shape);
    if (data_bytes) std::memcpy(t.data(), data.data(), data_bytes);
    ckpt.tensors.emplace_back(std::move(name), std::move(t));
  }
  if (r.remaining() != 0)
    r.fail(std::to_string(r.remaining()) +
           " unexpected bytes after the last tensor (expected the CRC)");
  return ckpt;
}

}  // namespace spruce::io
