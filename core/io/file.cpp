// Atomic writes, whole-file reads and bounds-checked parsing for core/io.
#include "file.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <limits>
#include <system_error>

#include "../error.h"

namespace spruce::io {

namespace {
int64_t g_fail_next_after = -1;

// The temporaries of live AtomicFiles, for remove_temporaries_now(): fixed
// storage, claimed and released with atomics, read from a signal handler.
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
std::atomic<bool> g_slot_used[kSlots];
std::atomic<bool> g_slot_ready[kSlots];
char g_slot_path[kSlots][kPathMax];

int claim_slot(const std::string& path) {
  if (path.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (!g_slot_used[i].compare_exchange_strong(expected, true)) continue;
    std::memcpy(g_slot_path[i], path.c_str(), path.size() + 1);
    g_slot_ready[i].store(true);
    return i;
  }
  return -1;  // more than kSlots files open at once: that one is not cleaned up by a signal
}

void release_slot(int& slot) {
  if (slot < 0) return;
  g_slot_ready[slot].store(false);
  g_slot_used[slot].store(false);
  slot = -1;
}

}  // namespace

void remove_temporaries_now() noexcept {
  for (int i = 0; i < kSlots; ++i)
    if (g_slot_ready[i].load()) ::unlink(g_slot_path[i]);
}

void sync_parent_directory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

uint32_t crc32_update(uint32_t crc, std::span<const uint8_t> bytes) {
  return static_cast<uint32_t>(crc32_z(crc, bytes.data(), bytes.size()));
}

bool dims_fit_int64(std::span<const int64_t> dims) {
  int64_t product = 1;
  for (int64_t d : dims) {
    if (d < 0) return false;
    if (d == 0) continue;
    if (product > std::numeric_limits<int64_t>::max() / d) return false;
    product *= d;
  }
  return true;
}

void inject_write_failure_after(int64_t bytes) { g_fail_next_after = bytes; }

AtomicFile::AtomicFile(std::string path)
    : path_(std::move(path)),
      temp_path_(path_ + ".tmp." + std::to_string(static_cast<long>(::getpid()))) {
  fail_after_ = g_fail_next_after;
  g_fail_next_after = -1;
  slot_ = claim_slot(temp_path_);
  file_ = std::fopen(temp_path_.c_str(), "wb");
  if (!file_) release_slot(slot_);
  if (!file_)
    throw IoError("cannot write '" + path_ + "': creating temporary '" + temp_path_ +
                  "' failed: " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) std::remove(temp_path_.c_str());
  release_slot(slot_);
}

void AtomicFile::fail(const std::string& what, int err) {
  // Close and remove now, so the error leaves nothing behind even if the
  // caller keeps this object alive.
  if (file_) std::fclose(file_);
  file_ = nullptr;
  std::remove(temp_path_.c_str());
  release_slot(slot_);
  throw IoError("cannot write '" + path_ + "': " + what +
                (err ? std::string(": ") + std::strerror(err) : ""));
}

void AtomicFile::write(const void* data, size_t size) {
  if (!file_) throw IoError("cannot write '" + path_ + "': file already closed");
  const auto* bytes = static_cast<const uint8_t*>(data);
  size_t n = size;
  bool injected = false;
  if (fail_after_ >= 0 && size_ + size > static_cast<uint64_t>(fail_after_)) {
    n = static_cast<size_t>(static_cast<uint64_t>(fail_after_) - size_);
    injected = true;
  }
  if (n > 0 && std::fwrite(bytes, 1, n, file_) != n) fail("write failed", errno);
  crc_ = crc32_update(crc_, {bytes, n});
  size_ += n;
  if (injected) fail("simulated write failure after " + std::to_string(size_) + " bytes", ENOSPC);
}

void AtomicFile::commit() {
  if (!file_) throw IoError("cannot write '" + path_ + "': file already closed");
  if (std::fflush(file_) != 0) fail("flush failed", errno);
  if (::fsync(::fileno(file_)) != 0) fail("fsync failed", errno);
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) fail("close failed", errno);
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail("renaming '" + temp_path_ + "' into place failed", errno);
  committed_ = true;
  release_slot(slot_);
  sync_parent_directory(path_);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    throw IoError("cannot read '" + path + "': no such file");
  if (!std::filesystem::is_regular_file(status))
    throw IoError("cannot read '" + path + "': not a regular file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw IoError("cannot read '" + path + "': " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  const uintmax_t expected = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(expected));
  uint8_t chunk[1 << 16];
  // Read to the end rather than trusting a size taken before opening.
  while (true) {
    const size_t got = std::fread(chunk, 1, sizeof(chunk), f);
    bytes.insert(bytes.end(), chunk, chunk + got);
    if (got < sizeof(chunk)) break;
  }
  const bool error = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (error) throw IoError("cannot read '" + path + "': " + std::strerror(err));
  return bytes;
}

void ByteReader::fail(const std::string& message) const {
  throw FormatError(source_ + ": " + message);
}

void ByteReader::seek(size_t offset, std::string_view field) {
  if (offset > bytes_.size())
    fail(std::string(field) + " points to offset " + std::to_string(offset) +
         ", past the end of the file (" + std::to_string(bytes_.size()) + " bytes)");
  offset_ = offset;
}

void ByteReader::need(uint64_t n, std::string_view field) const {
  if (n > remaining())
    fail("truncated or corrupted: " + std::string(field) + " needs " + std::to_string(n) +
         " bytes at offset " + std::to_string(offset_) + ", only " + std::to_string(remaining()) +
         " remain");
}

std::span<const uint8_t> ByteReader::take(uint64_t n, std::string_view field) {
  need(n, field);
  auto s = bytes_.subspan(offset_, static_cast<size_t>(n));
  offset_ += static_cast<size_t>(n);
  return s;
}

std::string ByteReader::take_string(uint64_t n, std::string_view field) {
  auto s = take(n, field);
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

}  // namespace spruce::io
