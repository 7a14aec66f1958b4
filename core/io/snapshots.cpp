// Epoch snapshots: link (or copy) atomically, then rotate.
#include "snapshots.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "../error.h"
#include "file.h"

namespace spruce::io {

namespace fs = std::filesystem;

std::string snapshot_name(int64_t epoch) { return "epoch-" + std::to_string(epoch) + ".ckpt"; }

std::vector<int64_t> list_snapshots(const std::string& dir) {
  std::vector<int64_t> epochs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    constexpr size_t kPrefix = 6, kSuffix = 5;  // "epoch-", ".ckpt"
    if (name.size() <= kPrefix + kSuffix || name.compare(0, kPrefix, "epoch-") != 0 ||
        name.compare(name.size() - kSuffix, kSuffix, ".ckpt") != 0)
      continue;
    const std::string digits = name.substr(kPrefix, name.size() - kPrefix - kSuffix);
    if (digits.size() > 15 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    epochs.push_back(std::stoll(digits));
  }
  std::sort(epochs.begin(), epochs.end());
  return epochs;
}

void save_snapshot(const std::string& checkpoint, int64_t epoch, int64_t keep) {
  if (keep < 1) throw UsageError("save_snapshot: keep " + std::to_string(keep) + ", expected >= 1");
  fs::path dir = fs::path(checkpoint).parent_path();
  if (dir.empty()) dir = ".";
  const std::string target = (dir / snapshot_name(epoch)).string();
  const std::string temp = target + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  ::unlink(temp.c_str());
  if (::link(checkpoint.c_str(), temp.c_str()) == 0) {
    if (::rename(temp.c_str(), target.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp.c_str());
      throw IoError("cannot write '" + target + "': renaming '" + temp +
                    "' into place failed: " + std::strerror(err));
    }
    sync_parent_directory(target);
  } else {  // no hard links here (or another error, which the copy reports)
    const std::vector<uint8_t> bytes = read_file(checkpoint);
    AtomicFile copy(target);
    copy.write(bytes.data(), bytes.size());
    copy.commit();
  }
  const std::vector<int64_t> epochs = list_snapshots(dir.string());
  std::vector<int64_t> older;
  for (int64_t e : epochs)
    if (e <= epoch) older.push_back(e);
  const size_t excess = older.size() > static_cast<size_t>(keep) ? older.size() - keep : 0;
  for (size_t i = 0; i < excess; ++i) {
    std::error_code ec;
    fs::remove(dir / snapshot_name(older[i]), ec);
  }
}

}  // namespace spruce::io
