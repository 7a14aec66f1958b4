// RunLock: flock on <dir>/.lock, re-checked against the path after locking.
#include "run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

namespace spruce::io {
namespace {

/// The "<pid> <program>" a holder wrote, trimmed; empty if not written yet.
std::string holder_of(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  std::string s(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

RunLock::RunLock(const std::string& dir, const std::string& program)
    : path_((std::filesystem::path(dir) / kFileName).string()) {
  for (int attempt = 0;; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw IoError("cannot lock the run folder " + dir + ": creating '" + path_ +
                    "' failed: " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err != EWOULDBLOCK) throw IoError("cannot lock '" + path_ + "': " + std::strerror(err));
      // The holder writes its PID right after locking: give it a moment.
      std::string holder;
      for (int i = 0; i < 50 && (holder = holder_of(path_)).empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const size_t space = holder.find(' ');
      const std::string pid = holder.substr(0, space);
      const std::string who =
          space == std::string::npos ? "another process" : holder.substr(space + 1);
      throw RunLockedError(dir + " is in use by " + who + " (PID " +
                           (pid.empty() ? std::string("unknown") : pid) + ", holding " + path_ +
                           "); wait for it to finish or stop it, or choose another --out");
    }
    // Did the previous holder unlink the file between our open and flock?
    struct stat by_fd {
    }, by_path{};
    if (::fstat(fd, &by_fd) == 0 && ::stat(path_.c_str(), &by_path) == 0 &&
        by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino) {
      fd_ = fd;
      break;
    }
    ::close(fd);
    if (attempt == 100) throw IoError("cannot lock '" + path_ + "': it keeps being replaced");
  }
  const std::string text = std::to_string(static_cast<long>(::getpid())) + " " + program + "\n";
  if (::ftruncate(fd_, 0) != 0 ||
      ::write(fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    release();
    throw IoError("cannot write '" + path_ + "': " + std::strerror(err));
  }
}

void RunLock::release() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // first, while still locked: see run_lock.h
  ::close(fd_);
  fd_ = -1;
}

}  // namespace spruce::io
