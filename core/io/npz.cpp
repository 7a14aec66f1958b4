// .npz writer and validating reader (format notes in npz.h): the ZIP
// container; each entry's .npy array is written and parsed by npy.cpp.
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
#include "npy.h"

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
// Deflate cannot expand data by more than about 1032:1; a larger claimed
// uncompressed size is corrupt, and checking it bounds the allocation.
constexpr uint64_t kMaxDeflateRatio = 1032;

// ---------------------------------------------------------------- writing

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
