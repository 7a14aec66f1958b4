// An LD_PRELOAD shim for the crash and full-disk tests: it makes a tool fail
// at an exact point of a run instead of wherever a timer or a real disk
// happens to give out. io::AtomicFile writes every file as
// "<name>.tmp.<pid>" through fopen/fwrite/fsync and renames it into place;
// the shim wraps those calls.
//
// Crashes (rename):
//   SPRUCE_KILL_AT_CHECKPOINT=N   the N-th rename onto a file named last.ckpt (1-based)
//   SPRUCE_KILL_WHEN=before       SIGKILL before that rename: the new checkpoint is fully
//                                 written to its temporary file but never put in place
//                                 (a crash while saving)
//   SPRUCE_KILL_WHEN=after        SIGKILL right after it (a crash just after a checkpoint)
//
// Signals (rename):
//   SPRUCE_SIGNAL_AT_CHECKPOINT=N the N-th rename onto last.ckpt first raises
//   SPRUCE_SIGNAL=INT|TERM        this signal (default INT)
//   SPRUCE_SIGNAL_COUNT=1|2       once (a Ctrl-C while a checkpoint is written) or
//                                 twice (the second Ctrl-C, at that very moment)
//
// Write failures (fopen/fwrite/fsync, and link for snapshots):
//   SPRUCE_FAIL_WRITE=NAME        fail the temporary of the file named NAME (e.g. last.ckpt,
//                                 final.npz, log.csv), as a full or broken disk would
//   SPRUCE_FAIL_AT=N              ... the N-th such file (default 1)
//   SPRUCE_FAIL_ERRNO=ENOSPC|EIO  the error (default ENOSPC)
//   SPRUCE_FAIL_IN=write|fsync    where: fwrite after SPRUCE_FAIL_AFTER bytes (default 0)
//                                 returns short, or fsync fails (default write)
//
// Without these variables it only forwards to the real functions.
// fopen and fopen64 are wrapped separately: with _FILE_OFFSET_BITS=64 (Meson's
// default) the headers would rename this file's fopen to fopen64 as well.
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

const char* base_name(const char* path) {
  const char* name = std::strrchr(path, '/');
  return name != nullptr ? name + 1 : path;
}

bool is_checkpoint(const char* path) { return std::strcmp(base_name(path), "last.ckpt") == 0; }

std::atomic<long> g_checkpoints{0};
std::atomic<long> g_signal_checkpoints{0};

// The write-failure target: the FILE* of the chosen temporary, bytes so far.
std::atomic<long> g_fail_seen{0};
std::atomic<FILE*> g_fail_file{nullptr};
std::atomic<long> g_fail_written{0};

bool fail_in_fsync() {
  const char* in = std::getenv("SPRUCE_FAIL_IN");
  return in != nullptr && std::strcmp(in, "fsync") == 0;
}

int fail_errno() {
  const char* e = std::getenv("SPRUCE_FAIL_ERRNO");
  return e != nullptr && std::strcmp(e, "EIO") == 0 ? EIO : ENOSPC;
}

/// Remembers `f` when `path` is the temporary of the file to fail.
void watch(FILE* f, const char* path) {
  const char* target = std::getenv("SPRUCE_FAIL_WRITE");
  if (f == nullptr || target == nullptr || path == nullptr) return;
  const char* name = base_name(path);
  const size_t n = std::strlen(target);
  if (std::strncmp(name, target, n) != 0 || std::strncmp(name + n, ".tmp.", 5) != 0) return;
  const char* at = std::getenv("SPRUCE_FAIL_AT");
  if (++g_fail_seen == (at != nullptr ? std::atol(at) : 1)) g_fail_file = f;
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int rename(const char* from, const char* to) {
  using RenameFn = int (*)(const char*, const char*);
  static const auto real_rename = real<RenameFn>("rename");
  if (const char* at = std::getenv("SPRUCE_SIGNAL_AT_CHECKPOINT");
      at != nullptr && to != nullptr && is_checkpoint(to) &&
      ++g_signal_checkpoints == std::atol(at)) {
    const char* name = std::getenv("SPRUCE_SIGNAL");
    const int sig = name != nullptr && std::strcmp(name, "TERM") == 0 ? SIGTERM : SIGINT;
    const char* count = std::getenv("SPRUCE_SIGNAL_COUNT");
    for (long i = 0; i < (count != nullptr ? std::atol(count) : 1); ++i) ::raise(sig);
  }
  const char* at = std::getenv("SPRUCE_KILL_AT_CHECKPOINT");
  if (at == nullptr || to == nullptr || !is_checkpoint(to)) return real_rename(from, to);
  const long n = ++g_checkpoints;
  const char* when = std::getenv("SPRUCE_KILL_WHEN");
  const bool before = when != nullptr && std::strcmp(when, "before") == 0;
  const bool target = n == std::atol(at);
  if (target && before) ::raise(SIGKILL);
  const int rc = real_rename(from, to);
  if (target) ::raise(SIGKILL);
  return rc;
}

FILE* fopen(const char* path, const char* mode) {
  using FopenFn = FILE* (*)(const char*, const char*);
  static const auto real_fopen = real<FopenFn>("fopen");
  FILE* f = real_fopen(path, mode);
  watch(f, path);
  return f;
}

FILE* fopen64(const char* path, const char* mode) {
  using FopenFn = FILE* (*)(const char*, const char*);
  static const auto real_fopen64 = real<FopenFn>("fopen64");
  FILE* f = real_fopen64(path, mode);
  watch(f, path);
  return f;
}

size_t fwrite(const void* data, size_t size, size_t count, FILE* f) {
  using FwriteFn = size_t (*)(const void*, size_t, size_t, FILE*);
  static const auto real_fwrite = real<FwriteFn>("fwrite");
  FILE* target = g_fail_file.load();
  if (target == nullptr || f != target || fail_in_fsync() || size == 0)
    return real_fwrite(data, size, count, f);
  const char* after = std::getenv("SPRUCE_FAIL_AFTER");
  const long limit = after != nullptr ? std::atol(after) : 0;
  const long room = std::max(0L, limit - g_fail_written.load());
  const size_t fits = std::min(count, static_cast<size_t>(room) / size);
  const size_t done = fits > 0 ? real_fwrite(data, size, fits, f) : 0;
  g_fail_written += static_cast<long>(done * size);
  if (done < count) errno = fail_errno();
  return done;
}

// A snapshot is first tried as a hard link (core/io/snapshots.h): fail that
// too for the watched name, as a full disk would, so the copy is attempted.
int link(const char* from, const char* to) {
  using LinkFn = int (*)(const char*, const char*);
  static const auto real_link = real<LinkFn>("link");
  const char* target = std::getenv("SPRUCE_FAIL_WRITE");
  if (target != nullptr) {  // glibc declares link's arguments non-null
    const char* name = base_name(to);
    const size_t n = std::strlen(target);
    if (std::strncmp(name, target, n) == 0 && std::strncmp(name + n, ".tmp.", 5) == 0) {
      errno = fail_errno();
      return -1;
    }
  }
  return real_link(from, to);
}

int fsync(int fd) {
  using FsyncFn = int (*)(int);
  static const auto real_fsync = real<FsyncFn>("fsync");
  FILE* f = g_fail_file.load();
  if (f != nullptr && fail_in_fsync() && fd == ::fileno(f)) {
    errno = fail_errno();
    return -1;
  }
  return real_fsync(fd);
}

}  // extern "C"
