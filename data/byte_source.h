// ByteSource: reads a file that may be gzip-compressed, with checked reads.
//
// Internal to data/. The file's first two bytes decide: 1f 8b is gzip (read
// through zlib's gzread), anything else is read as is. Every failure names
// the file: IoError when it cannot be opened or read, FormatError when the
// content ends early or the gzip stream is corrupt. For a plain file the size
// is known up front, so callers compare it with what a header declares before
// allocating; for gzip it is not, so read_vector() grows its buffer only as
// data actually arrives.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace spruce::data {

class ByteSource {
 public:
  /// Opens `path` (IoError if it cannot be opened).
  explicit ByteSource(std::string path);
  ~ByteSource();
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  const std::string& path() const { return path_; }
  bool compressed() const { return gz_ != nullptr; }
  /// Total bytes of a plain file; -1 for gzip (unknown until read).
  int64_t known_size() const { return known_size_; }
  /// Bytes consumed so far (uncompressed).
  int64_t position() const { return position_; }

  /// Reads up to n bytes into dst; fewer only at the end of the data.
  int64_t read_some(void* dst, int64_t n);
  /// Reads exactly n bytes, or throws FormatError naming `what` (e.g. "the header").
  void read_exact(void* dst, int64_t n, const std::string& what);
  /// Reads exactly n bytes into a vector that grows with the data read, so a
  /// header that lies about the size cannot make us allocate much more than
  /// the file holds.
  std::vector<uint8_t> read_vector(int64_t n, const std::string& what);
  /// Reads everything that is left (growing as data arrives).
  std::vector<uint8_t> read_to_end();
  /// True when no byte is left to read.
  bool at_end();

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
  int64_t known_size_ = -1;
  int64_t position_ = 0;
};

}  // namespace spruce::data
