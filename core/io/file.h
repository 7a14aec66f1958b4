// Checked file I/O shared by the on-disk formats (npz, checkpoint).
//
// AtomicFile writes `<path>.tmp.<pid>`, then fflush + fsync + rename, so a
// reader never sees a half-written file at `path`: after a crash or a failed
// write the previous file is still there, and the temporary is removed.
// read_file() loads a whole file; ByteReader walks it with a bounds check on
// every read, so a length field is always checked against the bytes that
// remain before anything is allocated. All formats are little-endian on disk;
// spruce only builds for little-endian hosts (checked at compile time).
#pragma once

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace spruce::io {

static_assert(std::endian::native == std::endian::little,
              "spruce's file formats are little-endian and read by memcpy");

/// CRC-32 (zlib's, the one ZIP uses) of `bytes`, continuing from `crc`
/// (start with 0).
uint32_t crc32_update(uint32_t crc, std::span<const uint8_t> bytes);

/// A file written under a temporary name and renamed into place on commit().
/// Every failure throws IoError naming the target path; the destructor
/// removes the temporary unless commit() succeeded.
class AtomicFile {
 public:
  /// Creates `<path>.tmp.<pid>`; throws IoError when it cannot be created
  /// (e.g. the directory does not exist).
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends `size` bytes.
  void write(const void* data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Appends an integer in little-endian byte order.
  template <class T>
  void write_le(T value) {
    write(&value, sizeof(T));
  }

  /// Bytes written so far.
  uint64_t size() const { return size_; }
  /// CRC-32 of all bytes written so far.
  uint32_t crc() const { return crc_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

  /// fflush, fsync, close and rename onto `path`; then a best-effort fsync of
  /// the directory so the rename itself is durable.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what, int err);

  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
  uint32_t crc_ = 0;
  int64_t fail_after_ = -1;
  bool committed_ = false;
  int slot_ = -1;  // in the registry remove_temporaries_now() reads
};

/// Best-effort fsync of the folder holding `path`, so that a rename into it
/// is durable (some filesystems cannot fsync a folder; that is ignored).
void sync_parent_directory(const std::string& path);

/// Removes the temporary files of every AtomicFile alive right now. Only
/// async-signal-safe calls: for a signal handler that ends the process at
/// once (core/stop_request.h), so that it leaves no temporary behind.
void remove_temporaries_now() noexcept;

/// Test hook: the next AtomicFile created fails with IoError once it has
/// written `bytes` bytes, as a full disk would (-1 turns it off). It applies
/// to exactly one file, then resets itself.
void inject_write_failure_after(int64_t bytes);

/// The whole content of a regular file; throws IoError.
std::vector<uint8_t> read_file(const std::string& path);

/// True when the product of the non-zero `dims` fits in int64: a shape read
/// from a file such as [0, 2^40, 2^40] holds no data, yet would overflow the
/// element count that Tensor computes from it.
bool dims_fit_int64(std::span<const int64_t> dims);

/// Bounds-checked little-endian reads over a byte buffer. Every failure
/// throws FormatError("<source>: <message>").
class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, std::string source)
      : bytes_(bytes), source_(std::move(source)) {}

  size_t offset() const { return offset_; }
  size_t size() const { return bytes_.size(); }
  size_t remaining() const { return bytes_.size() - offset_; }
  /// Moves to an absolute offset (<= size()); `field` names it in errors.
  void seek(size_t offset, std::string_view field);

  /// Throws unless `n` more bytes are available; `field` names what needs them.
  void need(uint64_t n, std::string_view field) const;
  /// The next `n` bytes (a view into the buffer).
  std::span<const uint8_t> take(uint64_t n, std::string_view field);
  std::string take_string(uint64_t n, std::string_view field);
  template <class T>
  T read_le(std::string_view field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return v;
  }

  [[noreturn]] void fail(const std::string& message) const;
  const std::string& source() const { return source_; }

 private:
  std::span<const uint8_t> bytes_;
  std::string source_;
  size_t offset_ = 0;
};

}  // namespace spruce::io
