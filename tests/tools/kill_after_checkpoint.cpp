// An LD_PRELOAD shim for the crash tests: it wraps rename(), which
// io::AtomicFile calls to put a finished file in place, and kills the process
// with SIGKILL at a chosen checkpoint, so a "crash" lands at an exact point of
// a training run instead of wherever a timer happens to fire.
//
//   SPRUCE_KILL_AT_CHECKPOINT=N   the N-th rename onto a file named last.ckpt (1-based)
//   SPRUCE_KILL_WHEN=before       die before that rename: the new checkpoint is fully
//                                 written to its temporary file but never put in place
//                                 (a crash while saving)
//   SPRUCE_KILL_WHEN=after        die right after it (a crash just after a checkpoint)
//
// Without SPRUCE_KILL_AT_CHECKPOINT it only forwards to the real rename().
#include <dlfcn.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

bool is_checkpoint(const char* path) {
  const char* name = std::strrchr(path, '/');
  name = name != nullptr ? name + 1 : path;
  return std::strcmp(name, "last.ckpt") == 0;
}

std::atomic<long> g_checkpoints{0};

}  // namespace

extern "C" int rename(const char* from, const char* to) {
  using RenameFn = int (*)(const char*, const char*);
  static const auto real = reinterpret_cast<RenameFn>(dlsym(RTLD_NEXT, "rename"));
  const char* at = std::getenv("SPRUCE_KILL_AT_CHECKPOINT");
  if (at == nullptr || to == nullptr || !is_checkpoint(to)) return real(from, to);
  const long n = ++g_checkpoints;
  const char* when = std::getenv("SPRUCE_KILL_WHEN");
  const bool before = when != nullptr && std::strcmp(when, "before") == 0;
  const bool target = n == std::atol(at);
  if (target && before) ::raise(SIGKILL);
  const int rc = real(from, to);
  if (target) ::raise(SIGKILL);
  return rc;
}
