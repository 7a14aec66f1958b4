// ByteSource: plain or gzip file reading with checked sizes (see byte_source.h).
#include "byte_source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "../core/error.h"

namespace spruce::data {
namespace {

// Growth step of read_vector/read_to_end: big enough to be fast, small enough
// that a lying header costs at most this much beyond the data present.
constexpr int64_t kChunk = int64_t{1} << 20;

std::string errno_text() { return std::strerror(errno); }

}  // namespace

ByteSource::ByteSource(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  if (std::filesystem::is_directory(path_, ec)) {
    throw IoError(path_ + ": is a directory, expected a file");
  }
  file_ = std::fopen(path_.c_str(), "rb");
  if (file_ == nullptr) throw IoError(path_ + ": cannot open for reading (" + errno_text() + ")");
  unsigned char magic[2] = {0, 0};
  const size_t got = std::fread(magic, 1, 2, file_);
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    std::fclose(file_);
    file_ = nullptr;
    gz_ = gzopen(path_.c_str(), "rb");
    if (gz_ == nullptr) throw IoError(path_ + ": cannot open gzip stream (" + errno_text() + ")");
    gzbuffer(gz_, 1 << 17);
    return;
  }
  if (std::fseek(file_, 0, SEEK_END) != 0) {
    std::fclose(file_);
    throw IoError(path_ + ": cannot seek (" + errno_text() + ")");
  }
  known_size_ = static_cast<int64_t>(std::ftell(file_));
  if (known_size_ < 0) {
    std::fclose(file_);
    throw IoError(path_ + ": cannot determine the file size (" + errno_text() + ")");
  }
  std::rewind(file_);
}

ByteSource::~ByteSource() {
  if (file_ != nullptr) std::fclose(file_);
  if (gz_ != nullptr) gzclose(gz_);
}

int64_t ByteSource::read_some(void* dst, int64_t n) {
  auto* out = static_cast<unsigned char*>(dst);
  int64_t total = 0;
  while (total < n) {
    // gzread takes an unsigned count; stay well inside it.
    const int64_t want = std::min<int64_t>(n - total, int64_t{1} << 30);
    int64_t got = 0;
    if (gz_ != nullptr) {
      const int r = gzread(gz_, out + total, static_cast<unsigned>(want));
      int errnum = Z_OK;
      const char* msg = gzerror(gz_, &errnum);
      if (r < 0 || (errnum != Z_OK && errnum != Z_BUF_ERROR)) {
        throw FormatError(path_ + ": corrupt gzip data after " + std::to_string(position_ + total) +
                          " bytes (" + (errnum == Z_ERRNO ? errno_text() : std::string(msg)) + ")");
      }
      if (errnum == Z_BUF_ERROR) {
        // zlib's "unexpected end of file": the compressed stream was cut short.
        throw FormatError(path_ + ": gzip stream is truncated after " +
                          std::to_string(position_ + total + r) +
                          " uncompressed bytes, expected a complete stream");
      }
      got = r;
    } else {
      got = static_cast<int64_t>(std::fread(out + total, 1, static_cast<size_t>(want), file_));
      if (got < want && std::ferror(file_)) {
        throw IoError(path_ + ": read error after " + std::to_string(position_ + total + got) +
                      " bytes (" + errno_text() + ")");
      }
    }
    total += got;
    if (got < want) break;
  }
  position_ += total;
  return total;
}

void ByteSource::read_exact(void* dst, int64_t n, const std::string& what) {
  const int64_t start = position_;
  const int64_t got = read_some(dst, n);
  if (got < n) {
    throw FormatError(path_ + ": file ends after " + std::to_string(start + got) +
                      " bytes while reading " + what + ", expected " + std::to_string(start + n) +
                      " bytes" + (compressed() ? " (uncompressed)" : ""));
  }
}

std::vector<uint8_t> ByteSource::read_vector(int64_t n, const std::string& what) {
  std::vector<uint8_t> out;
  int64_t filled = 0;
  const int64_t start = position_;
  while (filled < n) {
    // Capacity at most doubles what was really read, so memory follows the data.
    const int64_t next = std::min(n, std::max(filled * 2, filled + kChunk));
    out.reserve(static_cast<size_t>(next));  // exact: resize alone may overshoot n
    out.resize(static_cast<size_t>(next));
    const int64_t got = read_some(out.data() + filled, next - filled);
    filled += got;
    if (filled < next) {
      throw FormatError(path_ + ": file ends after " + std::to_string(start + filled) +
                        " bytes while reading " + what + ", expected " + std::to_string(start + n) +
                        " bytes" + (compressed() ? " (uncompressed)" : ""));
    }
  }
  return out;
}

std::vector<uint8_t> ByteSource::read_to_end() {
  std::vector<uint8_t> out;
  if (known_size_ >= 0) {
    out.resize(static_cast<size_t>(std::max<int64_t>(known_size_ - position_, 0)));
    const int64_t got = read_some(out.data(), static_cast<int64_t>(out.size()));
    out.resize(static_cast<size_t>(got));
    return out;
  }
  int64_t filled = 0;
  while (true) {
    const int64_t next = std::max(filled * 2, filled + kChunk);
    out.resize(static_cast<size_t>(next));
    const int64_t got = read_some(out.data() + filled, next - filled);
    filled += got;
    if (filled < next) break;
  }
  out.resize(static_cast<size_t>(filled));
  return out;
}

bool ByteSource::at_end() {
  if (known_size_ >= 0) return position_ >= known_size_;
  unsigned char probe = 0;
  if (read_some(&probe, 1) == 0) return true;
  // The probe consumed a byte; give it back so position and content stay exact.
  gzungetc(probe, gz_);
  --position_;
  return false;
}

}  // namespace spruce::data
