// One process per run folder. A RunLock holds an exclusive flock(2) on
// "<dir>/.lock" for as long as it lives, with "<pid> <program>" written in
// the file, so a second process pointed at the same folder is refused with
// the PID of the one using it. The kernel drops a flock when its holder
// dies, however it dies, so a lock left by a crashed or killed run never
// blocks the next one (its stale file is simply taken over).
//
// Releasing unlinks the file while still holding the lock; a process that
// opened the old file meanwhile notices (its open file is no longer the one
// at the path) and tries again, so two processes never both hold a lock.
#pragma once

#include <string>

#include "../error.h"

namespace spruce::io {

/// Another live process holds the run folder's lock.
struct RunLockedError : UsageError {
  using UsageError::UsageError;
};

class RunLock {
 public:
  /// The lock file's name inside the run folder.
  static constexpr const char* kFileName = ".lock";

  /// Locks `dir` (which must exist) for `program`. Throws RunLockedError
  /// naming the holder's PID when a live process holds it, IoError when the
  /// lock file cannot be created.
  RunLock(const std::string& dir, const std::string& program);
  ~RunLock() { release(); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  /// Removes the lock file and drops the lock (idempotent).
  void release();
  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace spruce::io
